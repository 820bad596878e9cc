import { generationLinks, generationUrls } from '@flexy/contracts';
import { paramsOf, type GenerationWithImages } from '@flexy/persistence';

/** The public JSON shape of a generation (snake_case, stable for clients). */
export function generationView(g: GenerationWithImages) {
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

export function timingsView(g: GenerationWithImages) {
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
