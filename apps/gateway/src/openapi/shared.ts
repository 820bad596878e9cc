import type { SchemaObject } from '@nestjs/swagger/dist/interfaces/open-api-spec.interface';

/** Headers and stream shapes several routes document alike. */

export const IDEMPOTENCY_KEY_HEADER = {
  name: 'Idempotency-Key',
  required: false,
  description: 'A repeat with the same key and body answers the same resource (Idempotent-Replayed: true); the same key with another body is a 422.',
  schema: { type: 'string', maxLength: 200 },
} as const;

export const IDEMPOTENT_REPLAYED_HEADER: Record<string, { description: string; schema: SchemaObject }> = {
  'Idempotent-Replayed': { description: '`true` when an earlier request with the same Idempotency-Key created it.', schema: { type: 'string', enum: ['true'] } },
};

export const LAST_EVENT_ID_HEADER = {
  name: 'Last-Event-ID',
  required: false,
  description: 'Resume after this event (the `id` of the last one received).',
  schema: { type: 'string' },
} as const;

/**
 * One Server-Sent Event as the stream carries it (OpenAPI 3.0 describes each event of a
 * text/event-stream with `schema`): its type, its JSON data and the id to resume from.
 */
export function eventStreamSchema(types: readonly string[]): SchemaObject {
  return {
    type: 'object',
    required: ['event', 'data'],
    properties: {
      event: { type: 'string', enum: [...types] },
      data: { type: 'string', description: 'The event as JSON.' },
      id: { type: 'string', description: 'Send as Last-Event-ID to resume after this event.' },
      retry: { type: 'integer' },
    },
  };
}

export const GENERATION_EVENT_TYPES = ['queued', 'running', 'progress', 'preview', 'succeeded', 'failed', 'cancelled'] as const;
export const GENERATION_EVENT_STREAM = eventStreamSchema(GENERATION_EVENT_TYPES);
/** A sandbox run's stream: every engine's events (each tagged with `engine`), then `done` with the run. */
export const SANDBOX_EVENT_STREAM = eventStreamSchema([...GENERATION_EVENT_TYPES, 'done']);
