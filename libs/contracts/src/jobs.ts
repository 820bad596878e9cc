/**
 * Every queue and job the service uses, with its payload and result types, so the compiler checks
 * each producer (gateway) against each consumer (supervisor). Payloads read back from Redis are
 * validated again (`parseGenerateJob`) before use.
 */
import type { EngineId, GenerationParams } from '@flexy/engines';

export enum QueueName {
  Generation = 'generation',
  Webhook = 'webhook',
  /** Periodic housekeeping (retention), run by one supervisor at a time. */
  Maintenance = 'maintenance',
}

export enum JobName {
  Generate = 'generate',
  DeliverWebhook = 'deliver-webhook',
  ExpireGenerations = 'expire-generations',
}

/** Where a generation came from; it sets the BullMQ priority (lower runs first). */
export type JobOrigin = 'interactive' | 'sandbox' | 'batch';
export const ORIGIN_PRIORITY: Readonly<Record<JobOrigin, number>> = { interactive: 1, sandbox: 2, batch: 3 };

export interface GenerateJobPayload {
  generationId: string;
  engine: EngineId;
  /** Every parameter, defaults applied. */
  params: GenerationParams;
  origin: JobOrigin;
  /** Uploaded reference images (image-store paths of normalised PNGs), for engines that condition on them. */
  references: string[];
  /** The API key that asked for it (its owner; its concurrent-job slot is released when the job ends). */
  apiKeyId: string | null;
  /** The sandbox run or batch it belongs to, finished once all its members are. */
  sandboxRunId: string | null;
  batchId: string | null;
  /** Notified with a signed POST when the generation ends. */
  webhookUrl: string | null;
  /** Milliseconds since epoch when the gateway accepted the request (for queue-wait timing). */
  acceptedAt: number;
}

export interface GenerateJobResult {
  generationId: string;
  status: 'succeeded' | 'failed' | 'cancelled';
  imageCount: number;
}

export interface WebhookJobPayload {
  generationId: string;
  url: string;
}

export interface WebhookJobResult {
  statusCode: number;
}

/** Retention runs on a schedule; the supervisor that takes it reads RETENTION_DAYS itself. */
export type ExpireGenerationsPayload = Record<string, never>;

export interface ExpireGenerationsResult {
  /** Finished generations removed, with their images. */
  expired: number;
  /** Sandbox runs and batches removed once retention had emptied them. */
  sandboxRuns: number;
  batches: number;
  /** Idempotency records past their 24 hours. */
  idempotencyRecords: number;
}

export interface JobMap {
  [JobName.Generate]: { queue: QueueName.Generation; payload: GenerateJobPayload; result: GenerateJobResult };
  [JobName.DeliverWebhook]: { queue: QueueName.Webhook; payload: WebhookJobPayload; result: WebhookJobResult };
  [JobName.ExpireGenerations]: { queue: QueueName.Maintenance; payload: ExpireGenerationsPayload; result: ExpireGenerationsResult };
}

export type JobPayload<N extends JobName> = JobMap[N]['payload'];
export type JobResult<N extends JobName> = JobMap[N]['result'];

/** Progress a generation job publishes through BullMQ (and the gateway relays as events). */
export interface GenerateJobProgress {
  step: number;
  totalSteps: number;
  workerId: string;
}
