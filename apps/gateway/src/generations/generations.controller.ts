import { Body, Controller, Delete, Get, Headers, HttpCode, Inject, NotFoundException, Param, Post, Query, Req, Res } from '@nestjs/common';
import { ApiAcceptedResponse, ApiConflictResponse, ApiHeader, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import type { Response } from 'express';
import sharp from 'sharp';
import { CreateGenerationDto } from './create-generation.dto';
import { GenerationEventsService } from './generation-events.service';
import { generationLinks, generationView } from './generation.view';
import { GenerationsService, newGenerationId } from './generations.service';
import type { AuthedRequest } from '../auth/api-key.guard';
import { IdempotencyService } from '../auth/idempotency.service';
import { QuotaService } from '../auth/quota.service';
import { ImageQueryDto } from './image-query.dto';

const ID_PATTERN = /^gen_[0-9a-f]{32}$/;
const MAX_WAIT_S = 300;

/** RFC 7240 `Prefer: wait=N`; anything else means no wait. */
function parsePreferWait(prefer: string | undefined): number {
  const match = /(?:^|[,;\s])wait=(\d+)/.exec(prefer ?? '');
  return match ? Math.min(Number(match[1]), MAX_WAIT_S) : 0;
}

@ApiTags('generations')
@Controller('v1/generations')
export class GenerationsController {
  constructor(
    private readonly service: GenerationsService,
    private readonly events: GenerationEventsService,
    private readonly idempotency: IdempotencyService,
    private readonly quota: QuotaService,
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
    @Req() req: AuthedRequest,
    @Res() res: Response,
  ) {
    await this.quota.chargeRequest(req.apiKey);
    const { id, created } = await this.idempotency.once(req.apiKey, idempotencyKey, 'generation', dto, newGenerationId(), (newId) =>
      this.service.create(dto, { apiKey: req.apiKey, id: newId }),
    );
    if (!created) res.set('Idempotent-Replayed', 'true');
    const waitS = parsePreferWait(prefer);
    if (waitS > 0) {
      const finished = await this.service.waitForTerminal(id, waitS * 1000);
      res.set('Preference-Applied', `wait=${waitS}`);
      if (finished) return res.status(200).json(generationView(finished));
    }
    // A new generation is queued; a replayed one answers with where it is now.
    const status = created ? 'queued' : (await this.service.get(id)).status;
    const links = generationLinks(id);
    res.status(202).location(links.self).json({ id, status, links });
  }

  @Get(':id')
  @ApiOkResponse({ description: 'The generation with its parameters, timings and image links.' })
  async get(@Param('id') id: string) {
    if (!ID_PATTERN.test(id)) throw new NotFoundException(`generation ${id} not found`);
    return generationView(await this.service.get(id));
  }

  @Delete(':id')
  @HttpCode(202)
  @ApiAcceptedResponse({ description: '`cancelled` if it was still queued, `cancelling` if it is running (it stops within one step).' })
  @ApiConflictResponse({ description: 'Already finished.' })
  async cancel(@Param('id') id: string) {
    if (!ID_PATTERN.test(id)) throw new NotFoundException(`generation ${id} not found`);
    return { id, status: await this.service.cancel(id) };
  }

  @Get(':id/events')
  @ApiProduces('text/event-stream')
  @ApiOkResponse({ description: 'Server-Sent Events: queued, running, progress, preview, then succeeded/failed/cancelled. Resumable with Last-Event-ID.' })
  async stream(@Param('id') id: string, @Headers('last-event-id') lastEventId: string | undefined, @Res() res: Response) {
    if (!ID_PATTERN.test(id)) throw new NotFoundException(`generation ${id} not found`);
    await this.service.get(id); // 404 before the stream opens
    await this.events.stream([{ generationId: id, fallback: () => this.service.finalEvent(id) }], lastEventId, res);
  }

  @Get(':id/image')
  @ApiProduces('image/png', 'image/webp', 'image/jpeg')
  async image(@Param('id') id: string, @Query() query: ImageQueryDto, @Res() res: Response) {
    if (!ID_PATTERN.test(id)) throw new NotFoundException(`generation ${id} not found`);
    const g = await this.service.get(id);
    const img = g.images?.find((i) => i.index === (query.index ?? 0));
    if (g.status !== 'succeeded' || !img) throw new NotFoundException(`generation ${id} has no image ${query.index ?? 0} (status ${g.status})`);
    const png = await this.images.read(img.path);
    const format = query.format ?? 'png';
    const body = format === 'png' ? png : await sharp(png).toFormat(format, { quality: 90 }).toBuffer();
    res
      .status(200)
      .type(`image/${format}`)
      .set('Cache-Control', 'public, max-age=31536000, immutable')
      .set('Content-Disposition', `inline; filename="${id}_${img.index}.${format === 'jpeg' ? 'jpg' : format}"`)
      .send(body);
  }
}
