import { engineParamErrors, engineSpec, isEngineId } from '@flexy/engines';
import { SEED_RANGE } from './generation';
import type { GenerateJobPayload, JobOrigin } from './jobs';

const ORIGINS: readonly JobOrigin[] = ['interactive', 'sandbox', 'batch'];

export class InvalidJobPayloadError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid job payload: ${problems.join('; ')}`);
    this.name = 'InvalidJobPayloadError';
  }
}

/**
 * Validates a generate payload read back from Redis: Redis is shared infrastructure, so what comes
 * out of it is checked as strictly as what came over HTTP.
 */
export function parseGenerateJob(data: unknown): GenerateJobPayload {
  // Jobs queued before the group fields existed carry none: they belong to no group.
  const d: Record<string, unknown> = { sandboxRunId: null, batchId: null, ...((data ?? {}) as Record<string, unknown>) };
  const problems: string[] = [];
  const str = (k: string) => typeof d[k] === 'string' || problems.push(`${k} must be a string`);
  const num = (k: string) => (typeof d[k] === 'number' && Number.isFinite(d[k])) || problems.push(`${k} must be a number`);
  str('generationId');
  str('prompt');
  ['seed', 'steps', 'guidance', 'width', 'height', 'numImages', 'acceptedAt'].forEach(num);
  if (d.negativePrompt !== null && typeof d.negativePrompt !== 'string') problems.push('negativePrompt must be a string or null');
  if (!ORIGINS.includes(d.origin as JobOrigin)) problems.push('origin is unknown');
  if (!Array.isArray(d.references) || d.references.some((r) => typeof r !== 'string' || r.includes('..')))
    problems.push('references must be a list of image-store paths');
  for (const k of ['apiKeyId', 'webhookUrl', 'sandboxRunId', 'batchId']) if (d[k] !== null && typeof d[k] !== 'string') problems.push(`${k} must be a string or null`);
  if (!isEngineId(d.engine)) problems.push(`engine "${String(d.engine)}" is unknown`);
  if (problems.length) throw new InvalidJobPayloadError(problems);
  const p = d as unknown as GenerateJobPayload;
  if (!Number.isInteger(p.seed) || p.seed < SEED_RANGE.min || p.seed > SEED_RANGE.max) problems.push(`seed must be an integer between ${SEED_RANGE.min} and ${SEED_RANGE.max}`);
  problems.push(...engineParamErrors(engineSpec(p.engine), { ...p, referenceCount: p.references.length }).map((e) => e.message));
  if (problems.length) throw new InvalidJobPayloadError(problems);
  return p;
}
