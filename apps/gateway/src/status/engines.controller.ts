import { Controller, Get } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { ApiErrors, ApiJson } from '../common/api-responses';
import { EngineListView } from './engine.view';
import { StatusService } from './status.service';

@ApiTags('engines')
@Controller('v1/engines')
export class EnginesController {
  constructor(private readonly status: StatusService) {}

  @Get()
  @ApiOperation({ operationId: 'listEngines', summary: 'The engines and their live state' })
  @ApiJson(200, EngineListView, 'The engine catalog with live state: weights, resident workers, queue depth, typical seconds per step.')
  @ApiErrors(401, 429)
  async list() {
    return { engines: await this.status.engines() };
  }
}
