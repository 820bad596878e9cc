import { ConflictException, Injectable, UnprocessableEntityException } from '@nestjs/common';
import { PrismaService } from '@flexy/persistence';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

const MAX_KEY_LENGTH = 200;
/** How long a repeat waits for the first request with its key to finish creating the resource. */
const REPLAY_WAIT_MS = 30_000;
const REPLAY_POLL_MS = 25;

/** JSON with object keys sorted at every level: two bodies that differ only in key order hash alike. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

export interface IdempotentCreate {
  /** The caller's Idempotency-Key header, if any. */
  key: string | undefined;
  /** The owner the key is unique for ('' is the anonymous owner). */
  ownerId: string | null;
  resourceType: 'generation' | 'sandbox-run' | 'batch';
  body: unknown;
  newId: string;
  create: (id: string) => Promise<void>;
  /** Whether the resource with this id has been recorded (a repeat waits for it). */
  recorded: (id: string) => Promise<boolean>;
}

/**
 * `Idempotency-Key` on creates: the first request with a key claims it in the database (unique per
 * owner) before anything is queued; a repeat with the same body gets the same resource back, a repeat
 * with another body is a 422. A repeat that arrives while the first is still creating waits for it,
 * so every concurrent copy gets the same answer. The database, not one gateway's memory, holds the
 * claim, so it holds across gateways and restarts.
 */
@Injectable()
export class IdempotencyService {
  constructor(private readonly prisma: PrismaService) {}

  /** Forgets keys claimed before `before` (retention): a key older than that may be used again. */
  async expire(before: Date): Promise<number> {
    const { count } = await this.prisma.client.idempotencyRecord.deleteMany({ where: { createdAt: { lt: before } } });
    return count;
  }

  async once(request: IdempotentCreate): Promise<{ id: string; replayed: boolean }> {
    const { key, newId, create } = request;
    if (!key) {
      await create(newId);
      return { id: newId, replayed: false };
    }
    if (key.length > MAX_KEY_LENGTH) throw new UnprocessableEntityException(`Idempotency-Key must be at most ${MAX_KEY_LENGTH} characters`);
    const apiKeyId = request.ownerId ?? '';
    const requestHash = createHash('sha256').update(request.resourceType).update(canonicalJson(request.body)).digest('hex');
    const deadline = Date.now() + REPLAY_WAIT_MS;
    for (;;) {
      const claimed = await this.prisma.client.idempotencyRecord
        .create({ data: { apiKeyId, key, requestHash, resourceType: request.resourceType, resourceId: newId } })
        .then(() => true)
        .catch((err: { code?: string }) => {
          if (err.code === 'P2002') return false; // unique violation: the key was used before
          throw err;
        });
      if (claimed) {
        try {
          await create(newId);
          return { id: newId, replayed: false };
        } catch (err) {
          // Nothing was created, so the key is free for a retry.
          await this.prisma.client.idempotencyRecord.deleteMany({ where: { apiKeyId, key } });
          throw err;
        }
      }
      const existing = await this.prisma.client.idempotencyRecord.findUnique({ where: { apiKeyId_key: { apiKeyId, key } } });
      if (!existing) continue; // the first request failed and released the key: claim it again
      if (existing.requestHash !== requestHash || existing.resourceType !== request.resourceType) {
        throw new UnprocessableEntityException('Idempotency-Key was already used with a different request');
      }
      if (await request.recorded(existing.resourceId)) return { id: existing.resourceId, replayed: true };
      if (Date.now() > deadline) throw new ConflictException('a request with this Idempotency-Key is still being processed; retry shortly');
      await sleep(REPLAY_POLL_MS);
    }
  }
}
