import { Body, Controller, Get, Headers, HttpCode, NotFoundException, Param, Post, Query, Res } from '@nestjs/common';
import { ApiBody, ApiHeader, ApiOperation, ApiParam, ApiResponse, ApiTags } from '@nestjs/swagger';
import { SANDBOX_RUN_ID_PATTERN } from '@flexy/contracts';
import { GenerationLifecycle, type Principal } from '@flexy/generations';
import type { Response } from 'express';
import { Caller } from '../auth/caller.decorator';
import { pageFilters, rethrowCursor, RunListQueryDto } from '../common/list-query.dto';
import { GenerationEventsService } from '../generations/generation-events.service';
import { ApiErrors, ApiJson } from '../common/api-responses';
import { REQUEST_BODY } from '../openapi/request-bodies';
import { IDEMPOTENCY_KEY_HEADER, LAST_EVENT_ID_HEADER, SANDBOX_EVENT_STREAM } from '../openapi/shared';
import { NerdSandboxDto } from '../promptpics/promptpics.dto';
import { SandboxRunPageView, SandboxRunView } from './sandbox.view';
import { runSummary, SandboxService } from './sandbox.service';

const ID_PARAM = { name: 'id', description: 'The sandbox run id (`sbx_` and 32 hex digits).', schema: { type: 'string' } } as const;
const byId = { id: '$response.body#/id' };
const RUN_LINKS = {
  GetSandboxRun: { operationId: 'getSandboxRun', parameters: byId, description: 'Read it back; results appear as engines finish.' },
  SandboxRunEvents: { operationId: 'streamSandboxRunEvents', parameters: byId, description: 'Follow every engine live.' },
};

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
  @ApiOperation({ operationId: 'createSandboxRun', summary: 'Compare engines on one prompt, without waiting' })
  @ApiBody({ schema: REQUEST_BODY.sandboxRun })
  @ApiHeader(IDEMPOTENCY_KEY_HEADER)
  @ApiJson(202, SandboxRunView, 'Queued: one generation per engine; GET shows each result as it finishes.', { links: RUN_LINKS })
  @ApiErrors(400, 401, 403, 413, 422, 429, 503)
  async create(@Body() dto: NerdSandboxDto, @Caller() caller: Principal, @Headers('idempotency-key') idempotencyKey?: string) {
    const { id } = await this.lifecycle.acceptSandboxRun(caller, dto, { idempotencyKey });
    return this.sandbox.view(caller, id, { inlineImages: false });
  }

  @Get()
  @ApiOperation({ operationId: 'listSandboxRuns', summary: "The caller's own sandbox runs" })
  @ApiJson(200, SandboxRunPageView, 'Newest first, one page at a time (`next_cursor`).')
  @ApiErrors(400, 401, 422, 429)
  async list(@Query() q: RunListQueryDto, @Caller() caller: Principal) {
    const page = await this.lifecycle.listSandboxRuns(caller, { ...pageFilters(q), status: q.status }).catch(rethrowCursor);
    return { items: page.items.map(runSummary), next_cursor: page.nextCursor };
  }

  @Get(':id')
  @ApiOperation({ operationId: 'getSandboxRun', summary: 'A sandbox run' })
  @ApiParam(ID_PARAM)
  @ApiJson(200, SandboxRunView, 'The run with per-engine results (partial while it runs).', { links: { SandboxRunEvents: RUN_LINKS.SandboxRunEvents } })
  @ApiErrors(401, 404, 429)
  get(@Param('id') id: string, @Caller() caller: Principal) {
    return this.sandbox.view(caller, checkedId(id), { inlineImages: false });
  }

  @Get(':id/events')
  @ApiOperation({ operationId: 'streamSandboxRunEvents', summary: 'Live events of every engine of a run (Server-Sent Events)' })
  @ApiParam(ID_PARAM)
  @ApiHeader(LAST_EVENT_ID_HEADER)
  @ApiResponse({
    status: 200,
    description: 'Every engine’s events (each tagged with `engine`), then `done` with the run. Resumable with Last-Event-ID.',
    content: { 'text/event-stream': { schema: SANDBOX_EVENT_STREAM } },
  })
  @ApiErrors(401, 404, [429, 'Too many open event streams for this key, or the rate limit; come back after Retry-After seconds.'])
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
