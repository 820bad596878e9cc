import { HttpException, HttpStatus, Inject, Injectable } from '@nestjs/common';
import { REDIS } from '@flexy/config';
import type { ApiKey } from '@flexy/persistence';
import type Redis from 'ioredis';
import { inflightKey, rateWindowKey } from '@flexy/contracts';

/** In-flight entries older than this are dropped, so a lost terminal event cannot block a key forever. */
const INFLIGHT_STALE_MS = 24 * 3600_000;

function tooMany(message: string, retryAfterS: number): HttpException {
  const err = new HttpException({ statusCode: 429, error: 'Too Many Requests', message, retry_after_s: retryAfterS }, HttpStatus.TOO_MANY_REQUESTS);
  (err as HttpException & { retryAfter: number }).retryAfter = retryAfterS;
  return err;
}

/**
 * Per-key request rate (fixed one-minute windows) and concurrent-job quota, both kept in Redis so
 * every gateway enforces the same numbers.
 */
@Injectable()
export class QuotaService {
  constructor(@Inject(REDIS) private readonly redis: Redis) {}

  /** Counts one create against the key's per-minute limit. */
  async chargeRequest(key: ApiKey | null): Promise<void> {
    if (!key) return;
    const now = Date.now();
    const window = Math.floor(now / 60_000);
    const redisKey = rateWindowKey(key.id, window);
    const [[, count]] = (await this.redis.multi().incr(redisKey).expire(redisKey, 61).exec()) as [[null, number], unknown];
    if (count > key.rateLimitPerMinute) {
      throw tooMany(`rate limit of ${key.rateLimitPerMinute} requests per minute reached`, Math.ceil(((window + 1) * 60_000 - now) / 1000));
    }
  }

  /** Reserves `count` job slots for the key, or refuses when its concurrent-job quota is full. */
  async reserveJobs(key: ApiKey | null, jobIds: string[]): Promise<void> {
    if (!key || jobIds.length === 0) return;
    const k = inflightKey(key.id);
    const now = Date.now();
    await this.redis.zremrangebyscore(k, 0, now - INFLIGHT_STALE_MS);
    const inflight = await this.redis.zcard(k);
    if (inflight + jobIds.length > key.maxConcurrentJobs) {
      throw tooMany(`concurrent-job quota of ${key.maxConcurrentJobs} reached (${inflight} in flight)`, 5);
    }
    await this.redis.zadd(k, ...jobIds.flatMap((id) => [now, id]));
  }

  async releaseJobs(apiKeyId: string | null, jobIds: string[]): Promise<void> {
    if (apiKeyId && jobIds.length) await this.redis.zrem(inflightKey(apiKeyId), ...jobIds);
  }
}
