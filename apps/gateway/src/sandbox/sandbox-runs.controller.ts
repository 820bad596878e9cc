import { Body, Controller, Get, HttpCode, NotFoundException, Param, Post } from '@nestjs/common';
import { ApiAcceptedResponse, ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { NerdSandboxDto } from '../promptpics/promptpics.dto';
import { SandboxService } from './sandbox.service';

const ID_PATTERN = /^sbx_[0-9a-f]{32}$/;

@ApiTags('sandbox-runs')
@Controller('v1/sandbox-runs')
export class SandboxRunsController {
  constructor(private readonly sandbox: SandboxService) {}

  @Post()
  @HttpCode(202)
  @ApiAcceptedResponse({ description: 'Queued: one generation per engine; GET shows each result as it finishes.' })
  async create(@Body() dto: NerdSandboxDto) {
    const { id } = await this.sandbox.create(dto);
    return this.sandbox.view(id, { inlineImages: false });
  }

  @Get(':id')
  @ApiOkResponse({ description: 'The run with per-engine results (partial while it runs).' })
  get(@Param('id') id: string) {
    if (!ID_PATTERN.test(id)) throw new NotFoundException(`sandbox run ${id} not found`);
    return this.sandbox.view(id, { inlineImages: false });
  }
}
