import { Body, ConflictException, Controller, Delete, Get, Headers, HttpCode, Inject, NotFoundException, Param, Post, Query, Res } from '@nestjs/common';
import { ApiBody, ApiHeader, ApiOperation, ApiParam, ApiResponse, ApiTags } from '@nestjs/swagger';
import { generationLinks, GENERATION_ID_PATTERN } from '@flexy/contracts';
import { APP_CONFIG, type AppConfig } from '@flexy/config';
import { GenerationLifecycle, type Principal } from '@flexy/generations';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import type { Response } from 'express';
import sharp from 'sharp';
import { Caller } from '../auth/caller.decorator';
import { ApiErrors, ApiJson } from '../common/api-responses';
import { GenerationListQueryDto, pageFilters, rethrowCursor } from '../common/list-query.dto';
import { GENERATION_EVENT_STREAM, IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER, LAST_EVENT_ID_HEADER } from '../openapi/shared';
import { REQUEST_BODY } from '../openapi/request-bodies';
import { CompletionWaiter } from './completion-waiter.service';
import { CreateGenerationDto } from './create-generation.dto';
import { GenerationEventsService } from './generation-events.service';
import { CancelView, GenerationAcceptedView, GenerationPageView, GenerationView, generationView } from './generation.view';
import { IMAGE_FORMATS, ImageQueryDto } from './image-query.dto';

/** RFC 7240 `Prefer: wait=N`, capped by SYNC_WAIT_MS; anything else means no wait. */
function parsePreferWait(prefer: string | undefined, maxS: number): number {
  const match = /(?:^|[,;\s])wait=(\d+)/.exec(prefer ?? '');
  return match ? Math.min(Number(match[1]), maxS) : 0;
}

/** An id that cannot exist is a 404 before any lookup. */
function checkedId(id: string): string {
  if (!GENERATION_ID_PATTERN.test(id)) throw new NotFoundException(`generation ${id} not found`);
  return id;
}

const ID_PARAM = { name: 'id', description: 'The generation id (`gen_` and 32 hex digits).', schema: { type: 'string' } } as const;
const byId = { id: '$response.body#/id' };
/** Where a generation's answer leads: what a client (and a stateful test) can do next with its id. */
const GENERATION_LINKS = {
  GetGeneration: { operationId: 'getGeneration', parameters: byId, description: 'Read it back.' },
  GetGenerationImage: { operationId: 'getGenerationImage', parameters: byId, description: 'Its first image, once it succeeded.' },
  GenerationEvents: { operationId: 'streamGenerationEvents', parameters: byId, description: 'Follow it live.' },
  CancelGeneration: { operationId: 'cancelGeneration', parameters: byId, description: 'Stop it.' },
  DeleteGeneration: { operationId: 'deleteGeneration', parameters: byId, description: 'Remove it (cancelling it first if needed).' },
};

@ApiTags('generations')
@Controller('v1/generations')
export class GenerationsController {
  private readonly maxWaitS: number;

  constructor(
    private readonly lifecycle: GenerationLifecycle,
    private readonly waiter: CompletionWaiter,
    private readonly events: GenerationEventsService,
    @Inject(IMAGE_STORE) private readonly images: ImageStore,
    @Inject(APP_CONFIG) config: AppConfig,
  ) {
    this.maxWaitS = Math.floor(config.syncWaitMs / 1000);
  }

  @Post()
  @ApiOperation({ operationId: 'createGeneration', summary: 'Create a generation' })
  @ApiBody({ schema: REQUEST_BODY.generation })
  @ApiHeader({
    name: 'Prefer',
    required: false,
    description: '`wait=N`: answer with the finished generation if it completes within N seconds (at most SYNC_WAIT_MS, 300 by default).',
    schema: { type: 'string', example: 'wait=60' },
  })
  @ApiHeader(IDEMPOTENCY_KEY_HEADER)
  @ApiJson(202, GenerationAcceptedView, 'Queued; poll the `self` link or follow `events`.', {
    links: GENERATION_LINKS,
    headers: {
      Location: { description: 'The generation.', schema: { type: 'string' } },
      ...IDEMPOTENT_REPLAYED_HEADER,
    },
  })
  @ApiJson(200, GenerationView, 'Finished within the `Prefer: wait` window.', {
    links: GENERATION_LINKS,
    headers: { 'Preference-Applied': { description: 'The wait that was applied.', schema: { type: 'string' } }, ...IDEMPOTENT_REPLAYED_HEADER },
  })
  @ApiErrors(400, 401, 403, 413, 422, 429, 503)
  async create(
    @Body() dto: CreateGenerationDto,
    @Headers('prefer') prefer: string | undefined,
    @Headers('idempotency-key') idempotencyKey: string | undefined,
    @Caller() caller: Principal,
    @Res() res: Response,
  ) {
    const { id, replayed } = await this.lifecycle.accept(caller, dto, { idempotencyKey });
    if (replayed) res.set('Idempotent-Replayed', 'true');
    const waitS = parsePreferWait(prefer, this.maxWaitS);
    if (waitS > 0) {
      const finished = await this.waiter.terminal(id, waitS * 1000);
      res.set('Preference-Applied', `wait=${waitS}`);
      if (finished) return res.status(200).json(generationView(finished));
    }
    // A new generation is queued; a replayed one answers with where it is now.
    const status = replayed ? (await this.lifecycle.get(caller, id)).status : 'queued';
    const links = generationLinks(id);
    res.status(202).location(links.self).json({ id, status, links });
  }

  @Get()
  @ApiOperation({ operationId: 'listGenerations', summary: "The caller's own generations" })
  @ApiJson(200, GenerationPageView, 'Newest first, one page at a time (`next_cursor`).')
  @ApiErrors(400, 401, 422, 429)
  async list(@Query() q: GenerationListQueryDto, @Caller() caller: Principal) {
    const page = await this.lifecycle.list(caller, { ...pageFilters(q), status: q.status, engine: q.engine }).catch(rethrowCursor);
    return { items: page.items.map(generationView), next_cursor: page.nextCursor };
  }

  @Get(':id')
  @ApiOperation({ operationId: 'getGeneration', summary: 'A generation' })
  @ApiParam(ID_PARAM)
  @ApiJson(200, GenerationView, 'The generation with its parameters, timings and image links.', { links: GENERATION_LINKS })
  @ApiErrors(401, 404, 429)
  async get(@Param('id') id: string, @Caller() caller: Principal) {
    return generationView(await this.lifecycle.get(caller, checkedId(id)));
  }

  @Post(':id/cancel')
  @HttpCode(202)
  @ApiOperation({ operationId: 'cancelGeneration', summary: 'Cancel a generation (it stays readable, as `cancelled`)' })
  @ApiParam(ID_PARAM)
  @ApiJson(202, CancelView, '`cancelled` if it was still queued, `cancelling` if it is running (it stops within one step).', {
    links: { GetGeneration: GENERATION_LINKS.GetGeneration, DeleteGeneration: GENERATION_LINKS.DeleteGeneration },
  })
  @ApiErrors(401, 403, 404, [409, 'It has already finished.'], 429)
  async cancel(@Param('id') id: string, @Caller() caller: Principal) {
    return { id, status: await this.lifecycle.cancel(caller, checkedId(id)) };
  }

  /**
   * DELETE removes a generation: a finished one at once with its images (204); an unfinished one is
   * cancelled and removed, and while its worker is still stopping the answer is 202. Either way it is
   * gone from every read at once. Deleting again is harmless.
   */
  @Delete(':id')
  @ApiOperation({ operationId: 'deleteGeneration', summary: 'Delete a generation (cancelling it first if it has not finished)' })
  @ApiParam(ID_PARAM)
  @ApiJson(202, CancelView, 'Deleted; it was running and stops within one step (`cancelling`).')
  @ApiResponse({ status: 204, description: 'Deleted with its images.' })
  @ApiErrors(401, 403, 404, 429)
  async remove(@Param('id') id: string, @Caller() caller: Principal, @Res() res: Response) {
    const outcome = await this.lifecycle.delete(caller, checkedId(id));
    if (outcome === 'cancelling') return res.status(202).json({ id, status: 'cancelling' });
    res.status(204).end();
  }

  @Get(':id/events')
  @ApiOperation({ operationId: 'streamGenerationEvents', summary: 'Live events of a generation (Server-Sent Events)' })
  @ApiParam(ID_PARAM)
  @ApiHeader(LAST_EVENT_ID_HEADER)
  @ApiResponse({
    status: 200,
    description: 'queued, running, progress, preview, then succeeded | failed | cancelled, where the stream ends. Resumable with Last-Event-ID.',
    content: { 'text/event-stream': { schema: GENERATION_EVENT_STREAM } },
  })
  @ApiErrors(401, 404, [429, 'Too many open event streams for this key, or the rate limit; come back after Retry-After seconds.'])
  async stream(@Param('id') id: string, @Headers('last-event-id') lastEventId: string | undefined, @Caller() caller: Principal, @Res() res: Response) {
    await this.lifecycle.get(caller, checkedId(id)); // 404 before the stream opens
    await this.events.stream(caller, [{ generationId: id, fallback: () => this.lifecycle.finalEvent(id) }], lastEventId, res);
  }

  @Get(':id/image')
  @ApiOperation({ operationId: 'getGenerationImage', summary: 'An image of a generation' })
  @ApiParam(ID_PARAM)
  @ApiResponse({
    status: 200,
    description: 'PNG with the parameters embedded as text chunks, or converted (`format`).',
    content: Object.fromEntries(IMAGE_FORMATS.map((f) => [`image/${f}`, { schema: { type: 'string', format: 'binary' } }])),
  })
  @ApiErrors(400, 401, [404, 'No such generation, or it has no image with this index.'], [409, 'It has not succeeded (yet): queued, running, failed or cancelled.'], 429)
  async image(@Param('id') id: string, @Query() query: ImageQueryDto, @Caller() caller: Principal, @Res() res: Response) {
    const g = await this.lifecycle.get(caller, checkedId(id));
    const index = query.index ?? 0;
    if (g.status !== 'succeeded') throw new ConflictException(`generation ${id} has no image: it is ${g.status}`);
    const img = g.images?.find((i) => i.index === index);
    if (!img) throw new NotFoundException(`generation ${id} has no image ${index}`);
    const png = await this.images.read(img.path);
    const format = query.format ?? 'png';
    const body = format === 'png' ? png : await sharp(png).toFormat(format, { quality: 90 }).toBuffer();
    res
      .status(200)
      .type(`image/${format}`)
      // Private: the image belongs to one owner, so shared caches must not keep it.
      .set('Cache-Control', 'private, max-age=31536000, immutable')
      .set('Content-Disposition', `inline; filename="${id}_${img.index}.${format === 'jpeg' ? 'jpg' : format}"`)
      .send(body);
  }
}
