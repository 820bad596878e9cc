import { ApiProperty } from '@nestjs/swagger';
import { GENERATION_STATUSES, generationLinks, generationUrls } from '@flexy/contracts';
import { ENGINE_IDS } from '@flexy/engines';
import { paramsOf, type GenerationWithImages } from '@flexy/persistence';
import { GenerationFailureView, GenerationLinksView } from '../common/api-responses';

export const WEIGHTS_KINDS = ['demo', 'hub', 'random'] as const;

export class GenerationParametersView {
  @ApiProperty() prompt!: string;
  @ApiProperty({ type: String, nullable: true }) negative_prompt!: string | null;
  @ApiProperty({ type: 'integer' }) seed!: number;
  @ApiProperty({ type: 'integer' }) steps!: number;
  @ApiProperty({ type: 'number' }) guidance!: number;
  @ApiProperty({ type: 'integer' }) width!: number;
  @ApiProperty({ type: 'integer' }) height!: number;
  @ApiProperty({ type: 'integer' }) num_images!: number;
}

/** Milliseconds spent in each phase of a finished generation; null for a phase it did not report. */
export class TimingsView {
  @ApiProperty({ type: 'integer', nullable: true }) queue_wait_ms!: number | null;
  @ApiProperty({ type: 'integer', nullable: true }) load_ms!: number | null;
  @ApiProperty({ type: 'integer', nullable: true }) text_encode_ms!: number | null;
  @ApiProperty({ type: 'integer', nullable: true }) denoise_ms!: number | null;
  @ApiProperty({ type: 'integer', nullable: true }) decode_ms!: number | null;
  @ApiProperty({ type: 'integer', nullable: true }) encode_store_ms!: number | null;
  @ApiProperty({ type: 'integer', nullable: true }) total_ms!: number | null;
}

export class ImageView {
  @ApiProperty({ type: 'integer' }) index!: number;
  @ApiProperty({ type: 'integer' }) width!: number;
  @ApiProperty({ type: 'integer' }) height!: number;
  @ApiProperty({ example: '/v1/generations/gen_0123456789abcdef0123456789abcdef/image?index=0' }) url!: string;
}

/** The public JSON shape of a generation (snake_case, stable for clients). */
export class GenerationView {
  @ApiProperty({ example: 'gen_0123456789abcdef0123456789abcdef' }) id!: string;
  @ApiProperty({ enum: GENERATION_STATUSES }) status!: string;
  @ApiProperty({ enum: ENGINE_IDS }) engine!: string;
  @ApiProperty({ type: () => GenerationParametersView }) parameters!: GenerationParametersView;
  @ApiProperty({ enum: WEIGHTS_KINDS, nullable: true, description: '`demo`: tiny random demo snapshots (the images are noise); `random`: real-size random weights; `hub`: the real weights.' })
  weights!: string | null;
  @ApiProperty({ type: String, nullable: true }) model_revision!: string | null;
  @ApiProperty({ type: () => TimingsView, nullable: true, description: 'Set once it succeeded.' }) timings!: TimingsView | null;
  @ApiProperty({ type: String, nullable: true, description: 'The first image, once it succeeded.' }) image_url!: string | null;
  @ApiProperty({ type: () => [ImageView] }) images!: ImageView[];
  @ApiProperty({ type: () => GenerationFailureView, nullable: true }) error!: GenerationFailureView | null;
  @ApiProperty({ type: String, format: 'date-time' }) created_at!: Date;
  @ApiProperty({ type: String, format: 'date-time', nullable: true }) started_at!: Date | null;
  @ApiProperty({ type: String, format: 'date-time', nullable: true }) finished_at!: Date | null;
  @ApiProperty({ type: () => GenerationLinksView }) links!: GenerationLinksView;
}

/** What a create answers before the generation finished. */
export class GenerationAcceptedView {
  @ApiProperty({ example: 'gen_0123456789abcdef0123456789abcdef' }) id!: string;
  @ApiProperty({ enum: GENERATION_STATUSES, description: '`queued` for a new generation; where it is now for a replayed Idempotency-Key.' }) status!: string;
  @ApiProperty({ type: () => GenerationLinksView }) links!: GenerationLinksView;
}

export class GenerationPageView {
  @ApiProperty({ type: () => [GenerationView] }) items!: GenerationView[];
  @ApiProperty({ type: String, nullable: true, description: 'Pass as `cursor` for the next page; null on the last.' }) next_cursor!: string | null;
}

export class CancelView {
  @ApiProperty() id!: string;
  @ApiProperty({ enum: ['cancelled', 'cancelling'], description: '`cancelled`: it was still queued; `cancelling`: it is running and stops within one step.' })
  status!: 'cancelled' | 'cancelling';
}

export function generationView(g: GenerationWithImages): GenerationView {
  const images = (g.images ?? []).map((img) => ({ index: img.index, width: img.width, height: img.height, url: generationUrls.image(g.id, img.index) }));
  return {
    id: g.id,
    status: g.status,
    engine: g.engine,
    parameters: paramsOf(g),
    weights: g.weights,
    model_revision: g.modelRevision,
    timings: g.status === 'succeeded' ? timingsView(g) : null,
    image_url: g.status === 'succeeded' && images.length ? images[0].url : null,
    images,
    error: g.errorCode ? { code: g.errorCode, message: g.errorMessage, field: g.errorField } : null,
    created_at: g.createdAt,
    started_at: g.startedAt,
    finished_at: g.finishedAt,
    links: generationLinks(g.id),
  };
}

export function timingsView(g: GenerationWithImages): TimingsView {
  return {
    queue_wait_ms: g.queueWaitMs,
    load_ms: g.loadMs,
    text_encode_ms: g.textEncodeMs,
    denoise_ms: g.denoiseMs,
    decode_ms: g.decodeMs,
    encode_store_ms: g.encodeStoreMs,
    total_ms: g.totalMs,
  };
}
