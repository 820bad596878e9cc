import { Body, Controller, Delete, Get, Headers, HttpCode, Inject, NotFoundException, Param, Post, Query, Res } from '@nestjs/common';
import { ApiAcceptedResponse, ApiConflictResponse, ApiHeader, ApiNoContentResponse, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import { GENERATION_ID_PATTERN, generationLinks } from '@flexy/contracts';
import { GenerationLifecycle, type Principal } from '@flexy/generations';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import type { Response } from 'express';
import sharp from 'sharp';
import { Caller } from '../auth/caller.decorator';
import { GenerationListQueryDto, pageFilters, rethrowCursor } from '../common/list-query.dto';
import { CompletionWaiter } from './completion-waiter.service';
import { CreateGenerationDto } from './create-generation.dto';
import { GenerationEventsService } from './generation-events.service';
import { generationView } from './generation.view';
import { ImageQueryDto } from './image-query.dto';

const MAX_WAIT_S = 300;

/** RFC 7240 `Prefer: wait=N`; anything else means no wait. */
function parsePreferWait(prefer: string | undefined): number {
  const match = /(?:^|[,;\s])wait=(\d+)/.exec(prefer ?? '');
  return match ? Math.min(Number(match[1]), MAX_WAIT_S) : 0;
}

/** An id that cannot exist is a 404 before any lookup. */
function checkedId(id: string): string {
  if (!GENERATION_ID_PATTERN.test(id)) throw new NotFoundException(`generation ${id} not found`);
  return id;
}

@ApiTags('generations')
@Controller('v1/generations')
export class GenerationsController {
  constructor(
    private readonly lifecycle: GenerationLifecycle,
    private readonly waiter: CompletionWaiter,
    private readonly events: GenerationEventsService,
    @Inject(IMAGE_STORE) private readonly images: ImageStore,
  ) {}

  @Post()
  @ApiHeader({ name: 'Prefer', required: false, description: '`wait=N`: answer with the finished generation if it completes within N seconds (at most 300).' })
  @ApiAcceptedResponse({ description: 'Queued; poll the `self` link or follow `events`.' })
  @ApiOkResponse({ description: 'Finished within the `Prefer: wait` window.' })
  @ApiHeader({ name: 'Idempotency-Key', required: false, description: 'A repeat with the same key and body returns the same generation instead of a new one.' })
  async create(
    @Body() dto: CreateGenerationDto,
    @Headers('prefer') prefer: string | undefined,
    @Headers('idempotency-key') idempotencyKey: string | undefined,
    @Caller() caller: Principal,
    @Res() res: Response,
  ) {
    const { id, replayed } = await this.lifecycle.accept(caller, dto, { idempotencyKey });
    if (replayed) res.set('Idempotent-Replayed', 'true');
    const waitS = parsePreferWait(prefer);
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
  @ApiOkResponse({ description: "The caller's own generations, newest first, one page at a time (`next_cursor`)." })
  async list(@Query() q: GenerationListQueryDto, @Caller() caller: Principal) {
    const page = await this.lifecycle.list(caller, { ...pageFilters(q), status: q.status, engine: q.engine }).catch(rethrowCursor);
    return { items: page.items.map(generationView), next_cursor: page.nextCursor };
  }

  @Get(':id')
  @ApiOkResponse({ description: 'The generation with its parameters, timings and image links.' })
  async get(@Param('id') id: string, @Caller() caller: Principal) {
    return generationView(await this.lifecycle.get(caller, checkedId(id)));
  }

  @Post(':id/cancel')
  @HttpCode(202)
  @ApiAcceptedResponse({ description: '`cancelled` if it was still queued, `cancelling` if it is running (it stops within one step).' })
  @ApiConflictResponse({ description: 'Already finished.' })
  async cancel(@Param('id') id: string, @Caller() caller: Principal) {
    return { id, status: await this.lifecycle.cancel(caller, checkedId(id)) };
  }

  /**
   * DELETE cancels an unfinished generation (as POST …/cancel does) and deletes a finished one with
   * its images; deleting again is harmless.
   */
  @Delete(':id')
  @ApiAcceptedResponse({ description: 'Unfinished: cancelled (`cancelled`) or stopping within one step (`cancelling`).' })
  @ApiNoContentResponse({ description: 'Finished: deleted with its images.' })
  async remove(@Param('id') id: string, @Caller() caller: Principal, @Res() res: Response) {
    const g = await this.lifecycle.get(caller, checkedId(id)).catch(() => null);
    if (g && (g.status === 'queued' || g.status === 'running')) {
      return res.status(202).json({ id, status: await this.lifecycle.cancel(caller, id) });
    }
    await this.lifecycle.delete(caller, id);
    res.status(204).end();
  }

  @Get(':id/events')
  @ApiProduces('text/event-stream')
  @ApiOkResponse({ description: 'Server-Sent Events: queued, running, progress, preview, then succeeded/failed/cancelled. Resumable with Last-Event-ID.' })
  async stream(@Param('id') id: string, @Headers('last-event-id') lastEventId: string | undefined, @Caller() caller: Principal, @Res() res: Response) {
    await this.lifecycle.get(caller, checkedId(id)); // 404 before the stream opens
    await this.events.stream(caller, [{ generationId: id, fallback: () => this.lifecycle.finalEvent(id) }], lastEventId, res);
  }

  @Get(':id/image')
  @ApiProduces('image/png', 'image/webp', 'image/jpeg')
  async image(@Param('id') id: string, @Query() query: ImageQueryDto, @Caller() caller: Principal, @Res() res: Response) {
    const g = await this.lifecycle.get(caller, checkedId(id));
    const img = g.images?.find((i) => i.index === (query.index ?? 0));
    if (g.status !== 'succeeded' || !img) throw new NotFoundException(`generation ${id} has no image ${query.index ?? 0} (status ${g.status})`);
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
