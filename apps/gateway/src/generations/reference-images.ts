import { badRequest } from '../common/validation';
import type { ImageStore } from '@flexy/storage';
import sharp from 'sharp';

/** Caps for uploaded reference images: decoded size, encoded size, formats. */
const MAX_INPUT_PIXELS = 16_777_216; // 16 MP
/** Flux2Pipeline refuses conditioning images smaller than this on either side. */
const MIN_SIDE = 64;
const MAX_ENCODED_BYTES = 12 * 1024 * 1024;
const FORMATS = new Set(['png', 'jpeg', 'webp']);

/**
 * Decodes each uploaded reference with sharp under a pixel cap, refuses anything that is not a real
 * PNG/JPEG/WebP image, and stores a normalised PNG beside the generation's outputs. The paths go
 * into the job payload; the supervisor hands the pixels to the worker.
 */
export async function storeReferences(store: ImageStore, generationId: string, dataUris: string[]): Promise<string[]> {
  const paths: string[] = [];
  for (const [i, uri] of dataUris.entries()) {
    const field = `references[${i}]`;
    const bytes = Buffer.from(uri.slice(uri.indexOf(',') + 1), 'base64');
    if (bytes.length > MAX_ENCODED_BYTES) throw badRequest([{ field, message: `${field} is larger than ${MAX_ENCODED_BYTES} bytes` }]);
    let png: Buffer;
    try {
      const image = sharp(bytes, { limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error' });
      const meta = await image.metadata();
      if (!meta.format || !FORMATS.has(meta.format)) throw new Error(`format ${meta.format ?? 'unknown'} is not allowed`);
      if ((meta.width ?? 0) < MIN_SIDE || (meta.height ?? 0) < MIN_SIDE) throw new Error(`at least ${MIN_SIDE}×${MIN_SIDE} pixels needed, got ${meta.width}×${meta.height}`);
      png = await image.rotate().removeAlpha().toColourspace('srgb').png().toBuffer();
    } catch (err) {
      throw badRequest([{ field, message: `${field} is not a usable PNG, JPEG or WebP image (${(err as Error).message})` }]);
    }
    paths.push((await store.put(`${generationId}_ref`, i, 'png', png)).path);
  }
  return paths;
}
