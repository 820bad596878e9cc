import { Injectable, UnprocessableEntityException } from '@nestjs/common';
import { PrismaService, type ApiKey } from '@flexy/persistence';
import { createHash } from 'node:crypto';

const MAX_KEY_LENGTH = 200;

/**
 * `Idempotency-Key` on creates: the first request with a key claims it in the database (unique per
 * API key) before anything is queued; a repeat with the same body gets the same resource back, a
 * repeat with a different body is refused. The database, not one gateway's memory, holds the
 * claim, so it holds across gateways and restarts.
 */
@Injectable()
export class IdempotencyService {
  constructor(private readonly prisma: PrismaService) {}

  async once<T>(
    apiKey: ApiKey | null,
    key: string | undefined,
    resourceType: string,
    body: unknown,
    newId: string,
    create: (id: string) => Promise<T>,
  ): Promise<{ id: string; created: T | null }> {
    if (!key) return { id: newId, created: await create(newId) };
    if (key.length > MAX_KEY_LENGTH) throw new UnprocessableEntityException(`Idempotency-Key must be at most ${MAX_KEY_LENGTH} characters`);
    const apiKeyId = apiKey?.id ?? '';
    const requestHash = createHash('sha256').update(resourceType).update(JSON.stringify(body)).digest('hex');
    const claimed = await this.prisma.client.idempotencyRecord
      .create({ data: { apiKeyId, key, requestHash, resourceType, resourceId: newId } })
      .then(() => true)
      .catch((err: { code?: string }) => {
        if (err.code === 'P2002') return false; // unique violation: the key was used before
        throw err;
      });
    if (claimed) {
      try {
        return { id: newId, created: await create(newId) };
      } catch (err) {
        // Nothing was created, so the key is free for a retry.
        await this.prisma.client.idempotencyRecord.deleteMany({ where: { apiKeyId, key } });
        throw err;
      }
    }
    const existing = await this.prisma.client.idempotencyRecord.findUnique({ where: { apiKeyId_key: { apiKeyId, key } } });
    if (!existing) return this.once(apiKey, key, resourceType, body, newId, create); // released meanwhile
    if (existing.requestHash !== requestHash || existing.resourceType !== resourceType) {
      throw new UnprocessableEntityException('Idempotency-Key was already used with a different request');
    }
    return { id: existing.resourceId, created: null };
  }
}
