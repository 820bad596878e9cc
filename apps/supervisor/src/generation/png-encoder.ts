import { withPngText } from '@flexy/storage';
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import type { RawImage } from '../workers/worker-process';

export interface EncodedImage {
  data: Buffer;
  sha256: string;
}

/** Raw RGB8 from the worker → PNG with the generation parameters as text chunks (sharp runs off the event loop). */
export async function encodePng(image: RawImage, text: Record<string, string>): Promise<EncodedImage> {
  const { width, height, channels } = image.ref;
  const png = await sharp(image.pixels, { raw: { width, height, channels } })
    .png({ compressionLevel: 6, adaptiveFiltering: false })
    .toBuffer();
  const data = withPngText(png, text);
  return { data, sha256: createHash('sha256').update(data).digest('hex') };
}
