import { FRAME_PREFIX_BYTES, MAX_FRAME_BYTES, type SupervisorMessage, type WorkerMessage } from './protocol';

export interface Frame<H = Record<string, unknown>> {
  header: H;
  payload: Buffer;
}

const EMPTY = Buffer.alloc(0);

/**
 * Canonical encoding: compact JSON (JSON.stringify with no spacing, keys in insertion order), so the
 * same header gives the same bytes in TypeScript and Python.
 */
export function encodeFrame(header: SupervisorMessage | WorkerMessage | Record<string, unknown>, payload: Buffer = EMPTY): Buffer {
  const head = Buffer.from(JSON.stringify(header), 'utf8');
  if (head.length + payload.length > MAX_FRAME_BYTES) throw new RangeError('frame exceeds MAX_FRAME_BYTES');
  const prefix = Buffer.allocUnsafe(FRAME_PREFIX_BYTES);
  prefix.writeUInt32BE(head.length, 0);
  prefix.writeUInt32BE(payload.length, 4);
  return Buffer.concat([prefix, head, payload]);
}

/**
 * Incremental decoder for a byte stream: push chunks as they arrive, get whole frames back.
 * Keeps a list of chunks rather than concatenating on every push, so multi-megabyte image payloads
 * arriving in 64 KiB pieces cost one copy, not one per chunk.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < FRAME_PREFIX_BYTES) break;
      const prefix = this.peek(FRAME_PREFIX_BYTES);
      const headLen = prefix.readUInt32BE(0);
      const payloadLen = prefix.readUInt32BE(4);
      if (headLen + payloadLen > MAX_FRAME_BYTES) throw new RangeError(`frame of ${headLen + payloadLen} bytes exceeds limit`);
      const total = FRAME_PREFIX_BYTES + headLen + payloadLen;
      if (this.buffered < total) break;
      const bytes = this.take(total);
      const header = JSON.parse(bytes.toString('utf8', FRAME_PREFIX_BYTES, FRAME_PREFIX_BYTES + headLen));
      frames.push({ header, payload: bytes.subarray(FRAME_PREFIX_BYTES + headLen) });
    }
    return frames;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }
}
