import sharp from 'sharp';
import { readPngText, withPngText } from './png-text';

describe('PNG text chunks', () => {
  it('round-trips UTF-8 parameters and keeps the image decodable', async () => {
    const png = await sharp({ create: { width: 4, height: 3, channels: 3, background: '#336699' } }).png().toBuffer();
    const text = { prompt: 'café au lait ☕, "quoted"', seed: '42', size: '4x3' };
    const tagged = withPngText(png, text);
    expect(readPngText(tagged)).toEqual(text);
    const meta = await sharp(tagged).metadata();
    expect(meta).toMatchObject({ format: 'png', width: 4, height: 3 });
    const pixels = await sharp(tagged).raw().toBuffer();
    expect(pixels.equals(await sharp(png).raw().toBuffer())).toBe(true);
  });

  it('refuses a buffer that is not a PNG', () => {
    expect(() => withPngText(Buffer.from('GIF89a'), { a: 'b' })).toThrow(/not a PNG/);
  });
});
