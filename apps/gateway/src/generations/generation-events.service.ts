import { Inject, Injectable } from '@nestjs/common';
import { generationEventsKey, TERMINAL_EVENT_TYPES, type GenerationEvent } from '@flexy/contracts';
import { REDIS } from '@flexy/config';
import type { Response } from 'express';
import type Redis from 'ioredis';

const BLOCK_MS = 15_000;
/** Stream ids look like 1700000000000-0; anything else in Last-Event-ID restarts from the beginning. */
const STREAM_ID = /^\d+-\d+$/;

export interface SseEvent {
  id: string;
  event: GenerationEvent;
}

/**
 * Serves a generation's Redis event stream as Server-Sent Events: replays from Last-Event-ID, then
 * follows live until a terminal event. When the stream has expired, `fallback` supplies the final
 * event from the database, so a late client gets its answer at once and never hangs.
 */
@Injectable()
export class GenerationEventsService {
  constructor(@Inject(REDIS) private readonly redis: Redis) {}

  async stream(id: string, lastEventId: string | undefined, res: Response, fallback: () => Promise<GenerationEvent | null>) {
    res.status(200).set({
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.flushHeaders();
    const send = ({ id: eventId, event }: SseEvent) => res.write(`id: ${eventId}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);

    // A blocking XREAD needs a connection of its own.
    const reader = this.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null });
    let closed = false;
    res.on('close', () => {
      closed = true;
      reader.disconnect();
    });
    let cursor = lastEventId && STREAM_ID.test(lastEventId) ? lastEventId : '0-0';
    const finishFromRecord = async () => {
      const final = await fallback();
      if (!final || !TERMINAL_EVENT_TYPES.has(final.type)) return false;
      send({ id: 'final', event: final });
      return true;
    };
    try {
      if (!(await this.redis.exists(generationEventsKey(id))) && (await finishFromRecord())) return;
      for (;;) {
        if (closed) return;
        const batch = (await reader.xread('BLOCK', BLOCK_MS, 'STREAMS', generationEventsKey(id), cursor)) as
          | Array<[string, Array<[string, string[]]>]>
          | null;
        const entries = batch?.[0]?.[1] ?? [];
        if (entries.length === 0) {
          // Nothing new: the run is still going (keep the connection alive) unless the events expired.
          if (!(await this.redis.exists(generationEventsKey(id))) && (await finishFromRecord())) return;
          res.write(': keep-alive\n\n');
          continue;
        }
        for (const [entryId, fields] of entries) {
          cursor = entryId;
          const event = JSON.parse(fields[fields.indexOf('event') + 1]) as GenerationEvent;
          send({ id: entryId, event });
          if (TERMINAL_EVENT_TYPES.has(event.type)) return;
        }
      }
    } finally {
      reader.disconnect();
      if (!closed) res.end();
    }
  }
}
