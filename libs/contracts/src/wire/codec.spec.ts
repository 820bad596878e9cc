import { encodeFrame, FrameDecoder } from './codec';
import { MAX_FRAME_BYTES } from './protocol';
import vectors from './wire-vectors.json';

interface Vector {
  name: string;
  header: Record<string, unknown>;
  payload_hex: string;
  frame_hex: string;
}

describe('wire codec against the shared vectors (the Python side checks the same ones)', () => {
  it.each((vectors as Vector[]).map((v) => [v.name, v] as const))('%s encodes byte-identically and decodes back', (_n, v) => {
    const payload = Buffer.from(v.payload_hex, 'hex');
    expect(encodeFrame(v.header, payload).toString('hex')).toBe(v.frame_hex);
    const frames = new FrameDecoder().push(Buffer.from(v.frame_hex, 'hex'));
    expect(frames).toHaveLength(1);
    expect(frames[0].header).toEqual(v.header);
    expect(frames[0].payload.equals(payload)).toBe(true);
  });

  it('reassembles frames split at every byte boundary and back-to-back frames', () => {
    const all = Buffer.concat((vectors as Vector[]).map((v) => Buffer.from(v.frame_hex, 'hex')));
    const decoder = new FrameDecoder();
    const got = [];
    for (let i = 0; i < all.length; i += 7) got.push(...decoder.push(all.subarray(i, i + 7)));
    expect(got.map((f) => f.header)).toEqual((vectors as Vector[]).map((v) => v.header));
  });

  it('refuses a frame over the size limit before buffering it', () => {
    const prefix = Buffer.alloc(8);
    prefix.writeUInt32BE(16, 0);
    prefix.writeUInt32BE(MAX_FRAME_BYTES, 4);
    expect(() => new FrameDecoder().push(prefix)).toThrow(/exceeds/);
  });
});
