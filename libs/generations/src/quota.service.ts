import { Inject, Injectable } from '@nestjs/common';
import { REDIS } from '@flexy/config';
import { inflightKey, rateWindowKey } from '@flexy/contracts';
import type { ApiKey } from '@flexy/persistence';
import type Redis from 'ioredis';
import { tooManyRequests, unprocessable } from './errors';
import { GroupCommit, type UnitOutcome } from './group-commit';

/** In-flight entries older than this are dropped, so a lost terminal event cannot block a key forever. */
const INFLIGHT_STALE_MS = 24 * 3600_000;
const WINDOW_MS = 60_000;

/**
 * Charges the requests of one round, in order, each all or nothing (a later request of the same key
 * sees what an earlier one took). KEYS: each request's job count in this minute's window, then its
 * key's in-flight set (job id -> taken at). ARGV: now, stale-before, window ttl (s), then per request:
 * jobs per minute, concurrent jobs, job count n, n job ids. Answers two numbers per request: {0, 0}
 * taken, {1, used} the rate is spent, {2, in flight} the concurrent quota is full.
 */
const CHARGE_SCRIPT = `
local out = {}
local a = 4
for r = 1, #KEYS / 2 do
  local window, inflight = KEYS[2 * r - 1], KEYS[2 * r]
  local rate, concurrent, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local first = a + 3
  a = first + n
  redis.call('ZREMRANGEBYSCORE', inflight, 0, ARGV[2])
  local used = tonumber(redis.call('GET', window) or '0')
  local held = redis.call('ZCARD', inflight)
  if used + n > rate then
    out[#out + 1] = 1
    out[#out + 1] = used
  elseif held + n > concurrent then
    out[#out + 1] = 2
    out[#out + 1] = held
  else
    redis.call('INCRBY', window, n)
    redis.call('EXPIRE', window, ARGV[3])
    for i = first, first + n - 1 do redis.call('ZADD', inflight, ARGV[1], ARGV[i]) end
    out[#out + 1] = 0
    out[#out + 1] = 0
  end
end
return out`;

interface Charge {
  key: ApiKey;
  jobIds: string[];
}

type ChargeRedis = Redis & { chargeQuota(numberOfKeys: number, ...args: Array<string | number>): Promise<number[]> };

/**
 * Per-key limits, charged per job on every route that creates work (a four-engine sandbox run is four
 * jobs, a batch one job per item): a per-minute job rate (fixed one-minute windows) and a
 * concurrent-job quota (jobs queued or running). Both are checked and taken in one Redis script, so
 * they hold across every gateway; a refused request takes nothing.
 *
 * Charges that arrive while one is on its way to Redis go together in the next round (a group commit,
 * as creates do): one script call for all of them, each still all or nothing, so a busy gateway pays
 * one round trip for many requests rather than one each.
 */
@Injectable()
export class QuotaService {
  private readonly redis: ChargeRedis;
  private readonly charges = new GroupCommit<Charge, void>(
    (round) => this.chargeRound(round),
    (charge) => charge.jobIds.length,
    1024,
  );

  constructor(@Inject(REDIS) redis: Redis) {
    // A defined command goes out as EVALSHA (the script is sent once, not with every charge).
    if (!('chargeQuota' in redis)) redis.defineCommand('chargeQuota', { lua: CHARGE_SCRIPT });
    this.redis = redis as ChargeRedis;
  }

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
    await this.charges.submit({ key, jobIds });
  }

  /** Frees the concurrent slots of jobs that ended (or were never queued). The rate is not refunded. */
  async release(apiKeyId: string | null, jobIds: string[]): Promise<void> {
    if (apiKeyId && jobIds.length) await this.redis.zrem(inflightKey(apiKeyId), ...jobIds);
  }

  private async chargeRound(round: Charge[]): Promise<UnitOutcome<void>[]> {
    const now = Date.now();
    const window = Math.floor(now / WINDOW_MS);
    const keys = round.flatMap(({ key }) => [rateWindowKey(key.id, window), inflightKey(key.id)]);
    const args = round.flatMap(({ key, jobIds }) => [key.rateLimitPerMinute, key.maxConcurrentJobs, jobIds.length, ...jobIds]);
    const answer = await this.redis.chargeQuota(keys.length, ...keys, now, now - INFLIGHT_STALE_MS, Math.ceil(WINDOW_MS / 1000) + 1, ...args);
    return round.map(({ key }, i) => {
      const [outcome, count] = [answer[2 * i], answer[2 * i + 1]];
      if (outcome === 1) {
        const retryAfterS = Math.max(1, Math.ceil(((window + 1) * WINDOW_MS - now) / 1000));
        return { ok: false, error: tooManyRequests(`rate limit of ${key.rateLimitPerMinute} jobs per minute reached (${count} used)`, retryAfterS) };
      }
      if (outcome === 2) return { ok: false, error: tooManyRequests(`concurrent-job quota of ${key.maxConcurrentJobs} reached (${count} in flight)`, 5) };
      return { ok: true, value: undefined };
    });
  }
}
