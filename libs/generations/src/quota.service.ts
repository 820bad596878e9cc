import { Inject, Injectable } from '@nestjs/common';
import { REDIS } from '@flexy/config';
import { inflightKey, rateWindowKey } from '@flexy/contracts';
import type { ApiKey } from '@flexy/persistence';
import type Redis from 'ioredis';
import { tooManyRequests, unprocessable } from './errors';

/** In-flight entries older than this are dropped, so a lost terminal event cannot block a key forever. */
const INFLIGHT_STALE_MS = 24 * 3600_000;
const WINDOW_MS = 60_000;

/**
 * KEYS[1]: the key's job count in this minute's window; KEYS[2]: its in-flight set (job id -> taken at).
 * ARGV: now, stale-before, jobs per minute, concurrent jobs, window ttl (s), job ids...
 * Takes every job or none: {0} when taken, {1, used} when the rate is spent, {2, in flight} when the
 * concurrent quota is full.
 */
const CHARGE_SCRIPT = `
redis.call('ZREMRANGEBYSCORE', KEYS[2], 0, ARGV[2])
local n = #ARGV - 5
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + n > tonumber(ARGV[3]) then return {1, used} end
local inflight = redis.call('ZCARD', KEYS[2])
if inflight + n > tonumber(ARGV[4]) then return {2, inflight} end
redis.call('INCRBY', KEYS[1], n)
redis.call('EXPIRE', KEYS[1], ARGV[5])
for i = 6, #ARGV do redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i]) end
return {0, 0}`;

/**
 * Per-key limits, charged per job on every route that creates work (a four-engine sandbox run is four
 * jobs, a batch one job per item): a per-minute job rate (fixed one-minute windows) and a
 * concurrent-job quota (jobs queued or running). Both are checked and taken in one Redis script, so
 * they hold across every gateway; a refused request takes nothing.
 */
@Injectable()
export class QuotaService {
  constructor(@Inject(REDIS) private readonly redis: Redis) {}

  /**
   * Takes one rate unit and one concurrent slot per job id, or refuses: 429 with Retry-After when
   * waiting helps, 422 naming `field` when the request alone is larger than the key's limits (it fits
   * the API's schema; no JSON Schema knows this key's allowance).
   */
  async charge(key: ApiKey | null, jobIds: string[], field: string): Promise<void> {
    if (!key || jobIds.length === 0) return;
    const n = jobIds.length;
    if (n > key.rateLimitPerMinute || n > key.maxConcurrentJobs) {
      const limit = n > key.rateLimitPerMinute ? `${key.rateLimitPerMinute} jobs a minute` : `${key.maxConcurrentJobs} concurrent jobs`;
      throw unprocessable([{ field, message: `${field} asks for ${n} jobs at once; this API key allows ${limit}` }]);
    }
    const now = Date.now();
    const window = Math.floor(now / WINDOW_MS);
    const [outcome, count] = (await this.redis.eval(
      CHARGE_SCRIPT,
      2,
      rateWindowKey(key.id, window),
      inflightKey(key.id),
      now,
      now - INFLIGHT_STALE_MS,
      key.rateLimitPerMinute,
      key.maxConcurrentJobs,
      Math.ceil(WINDOW_MS / 1000) + 1,
      ...jobIds,
    )) as [number, number];
    if (outcome === 1) {
      const retryAfterS = Math.max(1, Math.ceil(((window + 1) * WINDOW_MS - now) / 1000));
      throw tooManyRequests(`rate limit of ${key.rateLimitPerMinute} jobs per minute reached (${count} used)`, retryAfterS);
    }
    if (outcome === 2) throw tooManyRequests(`concurrent-job quota of ${key.maxConcurrentJobs} reached (${count} in flight)`, 5);
  }

  /** Frees the concurrent slots of jobs that ended (or were never queued). The rate is not refunded. */
  async release(apiKeyId: string | null, jobIds: string[]): Promise<void> {
    if (apiKeyId && jobIds.length) await this.redis.zrem(inflightKey(apiKeyId), ...jobIds);
  }
}
