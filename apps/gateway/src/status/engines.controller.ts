import { Controller, Get } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { StatusService } from './status.service';

@ApiTags('engines')
@Controller('v1/engines')
export class EnginesController {
  constructor(private readonly status: StatusService) {}

  @Get()
  @ApiOkResponse({ description: 'The engine catalog with live state: weights, resident workers, queue depth, typical seconds per step.' })
  async list() {
    return { engines: await this.status.engines() };
  }
}
