import type Redis from 'ioredis';
import { TERMINAL_STATUSES } from './generation';

/**
 * The live events of one generation, as clients see them on `/v1/generations/:id/events`. They are
 * appended to a Redis stream per generation, so any gateway can serve them and a client can resume
 * from its Last-Event-ID (the stream entry id).
 */
export type GenerationEvent =
  | { type: 'queued'; position: number | null }
  | { type: 'running'; worker_id: string }
  | { type: 'progress'; step: number; total_steps: number }
  | { type: 'preview'; step: number; width: number; height: number; image: string }
  | { type: 'succeeded'; image_url: string | null }
  | { type: 'failed'; error: { code: string; message: string; field: string | null } }
  | { type: 'cancelled' };

/** The events that end a stream are named after the terminal statuses. */
export const TERMINAL_EVENT_TYPES: ReadonlySet<GenerationEvent['type']> = new Set(TERMINAL_STATUSES);

/** Events outlive the job by this long; after that the record in the database answers instead. */
const EVENTS_TTL_S = 3600;
const EVENTS_MAX_LEN = 500;

export const generationEventsKey = (id: string) => `flexy:events:${id}`;
/** Set when a cancel is asked for; a supervisor checks it before starting the job. */
export const cancelFlagKey = (id: string) => `flexy:cancel:${id}`;
/** Pub/sub channel on which cancels reach the supervisor that runs the job. */
export const CANCEL_CHANNEL = 'flexy:cancel';

export async function appendGenerationEvent(redis: Redis, id: string, event: GenerationEvent): Promise<void> {
  await appendGenerationEvents(redis, [{ id, event }]);
}

/** Appends to many generations' streams in one round trip (a create of many jobs). */
export async function appendGenerationEvents(redis: Redis, entries: { id: string; event: GenerationEvent }[]): Promise<void> {
  if (entries.length === 0) return;
  const tx = redis.multi();
  for (const { id, event } of entries) {
    const key = generationEventsKey(id);
    tx.xadd(key, 'MAXLEN', '~', String(EVENTS_MAX_LEN), '*', 'event', JSON.stringify(event)).expire(key, EVENTS_TTL_S);
  }
  await tx.exec();
}
