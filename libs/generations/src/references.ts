import { ENGINE_CATALOG } from '@flexy/engines';
import type { ImageStore } from '@flexy/storage';
import sharp from 'sharp';
import { unprocessable } from './errors';

/** Caps for uploaded reference images: decoded size, encoded size, formats. */
const MAX_INPUT_PIXELS = 16_777_216; // 16 MP
/** Flux2Pipeline refuses conditioning images smaller than this on either side. */
const MIN_SIDE = 64;
const MAX_ENCODED_BYTES = 12 * 1024 * 1024;
const FORMATS = new Set(['png', 'jpeg', 'webp']);

/** The form of a reference image in a request: a base64 data URI of PNG, JPEG or WebP (URLs are never fetched). */
export const REFERENCE_DATA_URI_PATTERN = '^data:image/(png|jpeg|webp);base64,[A-Za-z0-9+/=]+$';

/** A reference image that passed every check, normalised to PNG, not stored yet. */
export interface CheckedReference {
  png: Buffer;
}

/**
 * Decodes each uploaded reference with sharp under a pixel cap and refuses anything that is not a
 * real PNG/JPEG/WebP image (a 422: the data URI has the documented form, its content does not
 * decode). Nothing is written: a request whose third reference is bad leaves no
 * file behind for the first two.
 */
export async function checkReferences(dataUris: string[]): Promise<CheckedReference[]> {
  const checked: CheckedReference[] = [];
  for (const [i, uri] of dataUris.entries()) {
    const field = `references[${i}]`;
    const bytes = Buffer.from(uri.slice(uri.indexOf(',') + 1), 'base64');
    if (bytes.length > MAX_ENCODED_BYTES) throw unprocessable([{ field, message: `${field} is larger than ${MAX_ENCODED_BYTES} bytes` }]);
    try {
      const image = sharp(bytes, { limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error' });
      const meta = await image.metadata();
      if (!meta.format || !FORMATS.has(meta.format)) throw new Error(`format ${meta.format ?? 'unknown'} is not allowed`);
      if ((meta.width ?? 0) < MIN_SIDE || (meta.height ?? 0) < MIN_SIDE) throw new Error(`at least ${MIN_SIDE}×${MIN_SIDE} pixels needed, got ${meta.width}×${meta.height}`);
      checked.push({ png: await image.rotate().removeAlpha().toColourspace('srgb').png().toBuffer() });
    } catch (err) {
      throw unprocessable([{ field, message: `${field} is not a usable PNG, JPEG or WebP image (${(err as Error).message})` }]);
    }
  }
  return checked;
}

/** The image-store name of a generation's reference images (beside its outputs). */
const referenceOwner = (generationId: string) => `${generationId}_ref`;

/** Stores checked references beside the generation's outputs; all or none. */
export async function storeReferences(store: ImageStore, generationId: string, references: CheckedReference[]): Promise<string[]> {
  const paths: string[] = [];
  try {
    for (const [i, ref] of references.entries()) paths.push((await store.put(referenceOwner(generationId), i, 'png', ref.png)).path);
    return paths;
  } catch (err) {
    await removeFiles(store, paths);
    throw err;
  }
}

const MOST_REFERENCES = Math.max(...Object.values(ENGINE_CATALOG).map((spec) => spec.limits.maxReferences));

/** Where a generation's reference images are (or would be) stored: removal ignores the ones that never were. */
export function referencePaths(store: ImageStore, generationId: string): string[] {
  return Array.from({ length: MOST_REFERENCES }, (_, i) => store.relativePath(referenceOwner(generationId), i, 'png'));
}

export async function removeFiles(store: ImageStore, paths: string[]): Promise<void> {
  await Promise.all(paths.map((p) => store.remove(p).catch(() => undefined)));
}
