import { Body, Controller, Get, Headers, HttpCode, NotFoundException, Param, Post, Query, Res } from '@nestjs/common';
import { ApiAcceptedResponse, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import { SANDBOX_RUN_ID_PATTERN } from '@flexy/contracts';
import { GenerationLifecycle, type Principal } from '@flexy/generations';
import type { Response } from 'express';
import { Caller } from '../auth/caller.decorator';
import { pageFilters, rethrowCursor, RunListQueryDto } from '../common/list-query.dto';
import { GenerationEventsService } from '../generations/generation-events.service';
import { NerdSandboxDto } from '../promptpics/promptpics.dto';
import { runSummary, SandboxService } from './sandbox.service';

function checkedId(id: string): string {
  if (!SANDBOX_RUN_ID_PATTERN.test(id)) throw new NotFoundException(`sandbox run ${id} not found`);
  return id;
}

@ApiTags('sandbox-runs')
@Controller('v1/sandbox-runs')
export class SandboxRunsController {
  constructor(
    private readonly lifecycle: GenerationLifecycle,
    private readonly sandbox: SandboxService,
    private readonly events: GenerationEventsService,
  ) {}

  @Post()
  @HttpCode(202)
  @ApiAcceptedResponse({ description: 'Queued: one generation per engine; GET shows each result as it finishes.' })
  async create(@Body() dto: NerdSandboxDto, @Caller() caller: Principal, @Headers('idempotency-key') idempotencyKey?: string) {
    const { id } = await this.lifecycle.acceptSandboxRun(caller, dto, { idempotencyKey });
    return this.sandbox.view(caller, id, { inlineImages: false });
  }

  @Get()
  @ApiOkResponse({ description: "The caller's own sandbox runs, newest first, one page at a time (`next_cursor`)." })
  async list(@Query() q: RunListQueryDto, @Caller() caller: Principal) {
    const page = await this.lifecycle.listSandboxRuns(caller, { ...pageFilters(q), status: q.status }).catch(rethrowCursor);
    return { items: page.items.map(runSummary), next_cursor: page.nextCursor };
  }

  @Get(':id')
  @ApiOkResponse({ description: 'The run with per-engine results (partial while it runs).' })
  get(@Param('id') id: string, @Caller() caller: Principal) {
    return this.sandbox.view(caller, checkedId(id), { inlineImages: false });
  }

  @Get(':id/events')
  @ApiProduces('text/event-stream')
  @ApiOkResponse({ description: 'Server-Sent Events of every engine of the run (each tagged with `engine`), then `done` with the run. Resumable with Last-Event-ID.' })
  async stream(@Param('id') id: string, @Headers('last-event-id') lastEventId: string | undefined, @Caller() caller: Principal, @Res() res: Response) {
    const members = await this.sandbox.members(caller, checkedId(id));
    await this.events.stream(
      caller,
      members.map((m) => ({ generationId: m.id, label: { engine: m.engine }, fallback: () => this.lifecycle.finalEvent(m.id) })),
      lastEventId,
      res,
      () => this.sandbox.view(caller, id, { inlineImages: false }),
    );
  }
}
