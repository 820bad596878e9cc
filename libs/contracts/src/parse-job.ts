import { engineParamErrors, engineSpec, isEngineId, paramTypeProblems } from '@flexy/engines';
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
  const d = (data ?? {}) as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof d.generationId !== 'string') problems.push('generationId must be a string');
  if (typeof d.acceptedAt !== 'number' || !Number.isFinite(d.acceptedAt)) problems.push('acceptedAt must be a number');
  if (!d.params || typeof d.params !== 'object') problems.push('params must be an object');
  else problems.push(...paramTypeProblems(d.params as Record<string, unknown>).map((m) => `params.${m}`));
  if (!ORIGINS.includes(d.origin as JobOrigin)) problems.push('origin is unknown');
  if (!Array.isArray(d.references) || d.references.some((r) => typeof r !== 'string' || r.includes('..')))
    problems.push('references must be a list of image-store paths');
  for (const k of ['apiKeyId', 'webhookUrl', 'sandboxRunId', 'batchId']) if (d[k] !== null && typeof d[k] !== 'string') problems.push(`${k} must be a string or null`);
  if (!isEngineId(d.engine)) problems.push(`engine "${String(d.engine)}" is unknown`);
  if (problems.length) throw new InvalidJobPayloadError(problems);
  const p = d as unknown as GenerateJobPayload;
  if (p.params.seed < SEED_RANGE.min || p.params.seed > SEED_RANGE.max) problems.push(`seed must be an integer between ${SEED_RANGE.min} and ${SEED_RANGE.max}`);
  problems.push(...engineParamErrors(engineSpec(p.engine), { ...p.params, referenceCount: p.references.length }).map((e) => e.message));
  if (problems.length) throw new InvalidJobPayloadError(problems);
  return p;
}
