import { HttpException, HttpStatus, Inject, Injectable } from '@nestjs/common';
import { generationEventsKey, TERMINAL_EVENT_TYPES, type GenerationEvent } from '@flexy/contracts';
import { APP_CONFIG, REDIS, type AppConfig } from '@flexy/config';
import { ownerIdOf, type Principal } from '@flexy/generations';
import type { Response } from 'express';
import type Redis from 'ioredis';
import { randomUUID } from 'node:crypto';
import { compareStreamIds, EventHub, type StreamEntry } from './event-hub.service';

const KEEPALIVE_MS = 15_000;
/** A stream slot not refreshed for this long belongs to a gateway that died: it no longer counts. */
const SLOT_STALE_MS = 4 * KEEPALIVE_MS;
const STREAM_ID = /^\d{1,20}-\d{1,20}$/;

/** KEYS[1]: the owner's open streams (slot -> refreshed at). ARGV: now, stale-before, cap, slot. 1 if taken. */
const TAKE_SLOT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`;

const slotsKey = (ownerId: string | null) => `flexy:sse:${ownerId ?? 'anonymous'}`;

/** One generation's events as a client sees them; `label` is added to each event (e.g. the engine in a sandbox run). */
export interface EventSource {
  generationId: string;
  label?: Record<string, string>;
  /** The terminal event rebuilt from the database, for streams that expired. */
  fallback: () => Promise<GenerationEvent | null>;
}

/**
 * Serves generations' Redis event streams as Server-Sent Events: replays what follows the client's
 * Last-Event-ID, then follows live (through the process's one EventHub connection) until every
 * source has sent its terminal event. A client that already saw the end gets an empty stream that
 * closes at once; an expired stream is answered from the database. Each owner may hold a bounded
 * number of open streams across all gateways; a client leaving is routine, not an error.
 *
 * Event ids: a single source uses the Redis entry id itself; several sources use one cursor per
 * source, joined with '~' in source order, so a resumed connection continues each stream exactly.
 */
@Injectable()
export class GenerationEventsService {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly hub: EventHub,
  ) {}

  async stream(caller: Principal, sources: EventSource[], lastEventId: string | undefined, res: Response, onAllDone?: () => Promise<object>) {
    const release = await this.takeSlot(ownerIdOf(caller));
    const keys = sources.map((s) => generationEventsKey(s.generationId));
    const cursors = parseCursors(lastEventId, sources.length);
    const done = sources.map(() => false);
    let closed = false;
    const pending: Array<{ i: number; entry: StreamEntry }> = [];
    let wake: (() => void) | null = null;
    const unfollows: Array<() => void> = [];
    res.on('close', () => {
      closed = true;
      wake?.();
    });
    try {
      res.status(200).set({ 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache, no-transform', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
      res.flushHeaders();
      const send = (type: string, data: object) => res.write(`id: ${cursors.join('~')}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
      const emit = (i: number, event: GenerationEvent) => {
        send(event.type, { ...event, ...(sources.length > 1 ? { generation_id: sources[i].generationId } : {}), ...sources[i].label });
        if (TERMINAL_EVENT_TYPES.has(event.type)) done[i] = true;
      };
      const deliver = (i: number, entry: StreamEntry) => {
        if (done[i] || compareStreamIds(entry.id, cursors[i]) <= 0) return; // seen already (replay and live overlap)
        cursors[i] = entry.id;
        emit(i, JSON.parse(entry.fields[entry.fields.indexOf('event') + 1]) as GenerationEvent);
      };

      // Follow first, then replay: whatever arrives in between is in both, and `deliver` drops the copy.
      for (const [i, key] of keys.entries()) {
        const tail = await this.lastEntry(key);
        unfollows.push(
          await this.hub.follow(key, tail?.id ?? '0-0', (entries) => {
            for (const entry of entries) pending.push({ i, entry });
            wake?.();
          }),
        );
        if (tail && compareStreamIds(cursors[i], tail.id) >= 0) {
          // The client is at (or claims to be past) the end: it saw the terminal event if there is one.
          if (TERMINAL_EVENT_TYPES.has(eventType(tail))) done[i] = true;
          cursors[i] = tail.id;
          continue;
        }
        const replay = (await this.redis.xrange(key, `(${cursors[i]}`, '+')) as Array<[string, string[]]>;
        for (const [id, fields] of replay) deliver(i, { id, fields });
      }
      await this.finishExpired(sources, done, emit, cursors);

      while (!closed && done.some((d) => !d)) {
        if (pending.length === 0) {
          const timedOut = await new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(true), KEEPALIVE_MS);
            wake = () => {
              clearTimeout(timer);
              resolve(false);
            };
          });
          wake = null;
          if (closed) break;
          if (timedOut) {
            await this.finishExpired(sources, done, emit, cursors);
            if (done.some((d) => !d)) res.write(': keep-alive\n\n');
            await release.refresh();
          }
        }
        for (const { i, entry } of pending.splice(0)) deliver(i, entry);
      }
      if (!closed && onAllDone) send('done', await onAllDone());
    } finally {
      for (const unfollow of unfollows) unfollow();
      await release.free();
      if (!closed) res.end();
    }
  }

  /** A terminal state whose events expired (or never existed) is answered from the record. */
  private async finishExpired(sources: EventSource[], done: boolean[], emit: (i: number, e: GenerationEvent) => void, cursors: string[]) {
    for (const [i, s] of sources.entries()) {
      if (done[i] || (await this.redis.exists(generationEventsKey(s.generationId)))) continue;
      const final = await s.fallback();
      if (final && TERMINAL_EVENT_TYPES.has(final.type)) {
        cursors[i] = 'final'; // not a stream id: a client resuming from it is answered from the record again
        emit(i, final);
      }
    }
  }

  private async lastEntry(key: string): Promise<StreamEntry | null> {
    const [last] = (await this.redis.xrevrange(key, '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
    return last ? { id: last[0], fields: last[1] } : null;
  }

  /** Takes one of the owner's stream slots (429 when all are open), refreshed while the stream lives. */
  private async takeSlot(ownerId: string | null) {
    const key = slotsKey(ownerId);
    const slot = randomUUID();
    const now = Date.now();
    const taken = (await this.redis.eval(TAKE_SLOT, 1, key, now, now - SLOT_STALE_MS, this.config.sseMaxStreamsPerOwner, slot, SLOT_STALE_MS)) as number;
    if (!taken) {
      throw new HttpException(
        { statusCode: 429, error: 'Too Many Requests', message: `at most ${this.config.sseMaxStreamsPerOwner} event streams may be open at once per API key`, retry_after_s: 5 },
        HttpStatus.TOO_MANY_REQUESTS,
      );
    }
    return {
      refresh: () => this.redis.zadd(key, Date.now(), slot).then(() => undefined, () => undefined),
      free: () => this.redis.zrem(key, slot).then(() => undefined, () => undefined),
    };
  }
}

function eventType(entry: StreamEntry): GenerationEvent['type'] {
  return (JSON.parse(entry.fields[entry.fields.indexOf('event') + 1]) as GenerationEvent).type;
}

/** Cursors from a Last-Event-ID; anything unreadable restarts that source from the beginning. */
function parseCursors(lastEventId: string | undefined, count: number): string[] {
  const parts = (lastEventId ?? '').split('~');
  return Array.from({ length: count }, (_, i) => (STREAM_ID.test(parts[i] ?? '') ? parts[i] : '0-0'));
}
