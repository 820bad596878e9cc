import { HttpException, HttpStatus, Inject, Injectable } from '@nestjs/common';
import { REDIS } from '@flexy/config';
import type { ApiKey } from '@flexy/persistence';
import type Redis from 'ioredis';
import { inflightKey, rateWindowKey } from '@flexy/contracts';

/** In-flight entries older than this are dropped, so a lost terminal event cannot block a key forever. */
const INFLIGHT_STALE_MS = 24 * 3600_000;

/**
 * KEYS[1]: the key's in-flight set (job id -> reserved at). ARGV: now, stale-before, quota, job ids.
 * Drops stale entries, then adds the ids if they fit: returns -1, else the number in flight.
 */
const RESERVE_SCRIPT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[2])
local inflight = redis.call('ZCARD', KEYS[1])
if inflight + #ARGV - 3 > tonumber(ARGV[3]) then return inflight end
for i = 4, #ARGV do redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i]) end
return -1`;

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

  /** Reserves one job slot per id for the key, or refuses when its concurrent-job quota is full. */
  async reserveJobs(key: ApiKey | null, jobIds: string[]): Promise<void> {
    if (!key || jobIds.length === 0) return;
    const now = Date.now();
    // One script: the check and the reservation are atomic, so two gateways cannot both take the last slot.
    const inflight = (await this.redis.eval(RESERVE_SCRIPT, 1, inflightKey(key.id), now, now - INFLIGHT_STALE_MS, key.maxConcurrentJobs, ...jobIds)) as number;
    if (inflight >= 0) {
      throw tooMany(`concurrent-job quota of ${key.maxConcurrentJobs} reached (${inflight} in flight)`, 5);
    }
  }

  async releaseJobs(apiKeyId: string | null, jobIds: string[]): Promise<void> {
    if (apiKeyId && jobIds.length) await this.redis.zrem(inflightKey(apiKeyId), ...jobIds);
  }
}
