import { Inject, Injectable } from '@nestjs/common';
import { generationEventsKey, TERMINAL_EVENT_TYPES, type GenerationEvent } from '@flexy/contracts';
import { REDIS } from '@flexy/config';
import type { Response } from 'express';
import type Redis from 'ioredis';

const BLOCK_MS = 15_000;
const STREAM_ID = /^\d+-\d+$/;

/** One generation's events as a client sees them; `source` names the generation when several are merged. */
export interface EventSource {
  generationId: string;
  /** Added to each event's data (e.g. the engine, in a sandbox run). */
  label?: Record<string, string>;
  /** The terminal event rebuilt from the database, for streams that expired. */
  fallback: () => Promise<GenerationEvent | null>;
}

type XreadReply = Array<[string, Array<[string, string[]]>]> | null;

/**
 * Serves generations' Redis event streams as Server-Sent Events: replays from Last-Event-ID, then
 * follows live until every source has sent its terminal event. An expired stream is answered from
 * the database at once, so a late client gets its answer and never hangs.
 *
 * Event ids: a single source uses the Redis entry id itself; several sources use one cursor per
 * source, joined with '~' in source order, so a resumed connection continues each stream exactly.
 */
@Injectable()
export class GenerationEventsService {
  constructor(@Inject(REDIS) private readonly redis: Redis) {}

  async stream(sources: EventSource[], lastEventId: string | undefined, res: Response, onAllDone?: () => Promise<object>) {
    res.status(200).set({
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.flushHeaders();
    const cursors = parseCursors(lastEventId, sources.length);
    const done = sources.map(() => false);
    const eventId = () => cursors.join('~');
    const send = (id: string, type: string, data: object) => res.write(`id: ${id}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
    const emit = (i: number, event: GenerationEvent) => {
      send(eventId(), event.type, { ...event, ...(sources.length > 1 ? { generation_id: sources[i].generationId } : {}), ...sources[i].label });
      if (TERMINAL_EVENT_TYPES.has(event.type)) done[i] = true;
    };
    // A terminal state whose events expired (or never existed) is answered from the record.
    const finishExpired = async () => {
      const exists = await Promise.all(sources.map((s, i) => (done[i] ? 1 : this.redis.exists(generationEventsKey(s.generationId)))));
      for (const [i, s] of sources.entries()) {
        if (done[i] || exists[i]) continue;
        const final = await s.fallback();
        if (final && TERMINAL_EVENT_TYPES.has(final.type)) {
          cursors[i] = 'final';
          emit(i, final);
        }
      }
    };

    // A blocking XREAD needs a connection of its own.
    const reader = this.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null });
    let closed = false;
    res.on('close', () => {
      closed = true;
      reader.disconnect();
    });
    try {
      await finishExpired();
      while (!closed && done.some((d) => !d)) {
        const open = sources.map((_, i) => i).filter((i) => !done[i]);
        const reply = (await reader.xread(
          'BLOCK',
          BLOCK_MS,
          'STREAMS',
          ...open.map((i) => generationEventsKey(sources[i].generationId)),
          ...open.map((i) => cursors[i]),
        )) as XreadReply;
        if (!reply) {
          await finishExpired();
          if (done.some((d) => !d)) res.write(': keep-alive\n\n');
          continue;
        }
        for (const [key, entries] of reply) {
          const i = open.find((j) => generationEventsKey(sources[j].generationId) === key)!;
          for (const [entryId, fields] of entries) {
            if (done[i]) break;
            cursors[i] = entryId;
            emit(i, JSON.parse(fields[fields.indexOf('event') + 1]) as GenerationEvent);
          }
        }
      }
      if (!closed && onAllDone) send(eventId(), 'done', await onAllDone());
    } finally {
      reader.disconnect();
      if (!closed) res.end();
    }
  }
}

/** Cursors from a Last-Event-ID; anything unreadable restarts that source from the beginning. */
function parseCursors(lastEventId: string | undefined, count: number): string[] {
  const parts = (lastEventId ?? '').split('~');
  return Array.from({ length: count }, (_, i) => (STREAM_ID.test(parts[i] ?? '') ? parts[i] : '0-0'));
}
