import { Body, Controller, Get, Headers, HttpCode, NotFoundException, Param, Post, Res } from '@nestjs/common';
import { ApiAcceptedResponse, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { GenerationEventsService } from '../generations/generation-events.service';
import { GenerationsService } from '../generations/generations.service';
import { NerdSandboxDto } from '../promptpics/promptpics.dto';
import { SandboxService } from './sandbox.service';

const ID_PATTERN = /^sbx_[0-9a-f]{32}$/;

@ApiTags('sandbox-runs')
@Controller('v1/sandbox-runs')
export class SandboxRunsController {
  constructor(
    private readonly sandbox: SandboxService,
    private readonly generations: GenerationsService,
    private readonly events: GenerationEventsService,
  ) {}

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

  @Get(':id/events')
  @ApiProduces('text/event-stream')
  @ApiOkResponse({ description: 'Server-Sent Events of every engine of the run (each tagged with `engine`), then `done` with the run. Resumable with Last-Event-ID.' })
  async stream(@Param('id') id: string, @Headers('last-event-id') lastEventId: string | undefined, @Res() res: Response) {
    if (!ID_PATTERN.test(id)) throw new NotFoundException(`sandbox run ${id} not found`);
    const members = await this.sandbox.members(id);
    await this.events.stream(
      members.map((m) => ({ generationId: m.id, label: { engine: m.engine }, fallback: () => this.generations.finalEvent(m.id) })),
      lastEventId,
      res,
      () => this.sandbox.view(id, { inlineImages: false }),
    );
  }
}
