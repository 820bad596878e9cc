import { Logger } from '@nestjs/common';
import IORedis, { type RedisOptions } from 'ioredis';

/**
 * Every Redis connection of the service is made here, from the one setting REDIS_URL:
 *
 *   redis://[[user]:password@]host:port[/db]      a single Redis (rediss:// for TLS)
 *   redis-sentinel://[[user]:password@]host:port,host:port,…/<master name>[/db]
 *                                                 the master that these Sentinels name, followed
 *                                                 through failovers (ioredis asks the Sentinels again
 *                                                 whenever its connection drops)
 *
 * and every connection reports an outage through one reporter per process: one line when Redis
 * becomes unreachable and one when it answers again, however many connections notice it.
 */

import { parseSentinelUrl, redact } from './redis-url';

export { parseSentinelUrl, type SentinelTarget } from './redis-url';

/** Connection options for ioredis (and BullMQ) from REDIS_URL. */
export function redisOptions(url: string, options: RedisOptions = {}): RedisOptions {
  const sentinel = parseSentinelUrl(url);
  if (!sentinel) return { ...parseRedisUrl(url), ...options };
  return {
    sentinels: sentinel.sentinels,
    name: sentinel.name,
    db: sentinel.db,
    // The credentials are the master's (and its replicas'); the Sentinels are reached without any.
    username: sentinel.username,
    password: sentinel.password,
    // A master that dies drops the connection, and reconnecting asks the Sentinels afresh. A master
    // demoted alive (a manual failover) answers writes with READONLY: reconnect, and resend the command
    // to the one the Sentinels name now. (Not ioredis' failoverDetector: its +switch-master can land
    // during a reconnect and end the connection for good.)
    reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 2 : false),
    ...options,
  };
}

/** A plain redis:// URL as ioredis options (so both forms can take the same extra options). */
function parseRedisUrl(url: string): RedisOptions {
  const u = new URL(url);
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error(`REDIS_URL must be redis://, rediss:// or redis-sentinel://, got ${redact(url)}`);
  const db = u.pathname.replace(/^\//, '');
  return {
    host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: Number(u.port || 6379),
    username: decodeURIComponent(u.username) || undefined,
    password: decodeURIComponent(u.password) || undefined,
    db: db ? Number(db) : 0,
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

/** A new connection to the configured Redis, reporting outages through the process's one reporter. */
export function createRedis(url: string, options: RedisOptions = {}): IORedis {
  const redis = new IORedis(redisOptions(url, options));
  reportRedisErrors(redis);
  return redis;
}

// ---- one outage, one line -------------------------------------------------------------------------

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ECONNABORTED']);
/** After "reachable again", a new outage is reported no sooner than this (a flapping link is one story). */
const REPORT_AGAIN_AFTER_MS = 30_000;

export function isRedisConnectionError(err: Error & { code?: string }): boolean {
  return (
    CONNECTION_CODES.has(err.code ?? '') ||
    /Connection is closed|connect ETIMEDOUT|All sentinels are unreachable|Stream isn't writeable|Reached the max retries/i.test(err.message)
  );
}

class RedisOutageReporter {
  private readonly logger = new Logger('Redis');
  private downSince: number | null = null;
  private lastReportAt = 0;
  private readonly lastOther = new Map<string, number>();

  error(err: Error & { code?: string }, source?: string): void {
    const now = Date.now();
    if (!isRedisConnectionError(err)) {
      // Anything else (a READONLY replica during a failover, a script error) is worth seeing, once in a while.
      const key = `${source ?? ''}${err.message}`;
      if (now - (this.lastOther.get(key) ?? 0) < REPORT_AGAIN_AFTER_MS) return;
      this.lastOther.set(key, now);
      this.logger.warn(`${source ? `${source}: ` : ''}${err.message}`);
      return;
    }
    if (this.downSince !== null) return;
    this.downSince = now;
    if (now - this.lastReportAt < REPORT_AGAIN_AFTER_MS) return;
    this.lastReportAt = now;
    this.logger.warn(`Redis unreachable (${err.message}); reconnecting in the background`);
  }

  ready(): void {
    if (this.downSince === null) return;
    const downFor = Date.now() - this.downSince;
    this.downSince = null;
    if (this.lastReportAt >= Date.now() - downFor - 1) this.logger.log(`Redis reachable again after ${(downFor / 1000).toFixed(1)} s`);
  }
}

const reporter = new RedisOutageReporter();

/** Routes a connection's errors to the process's outage reporter (and keeps ioredis from printing each one). */
export function reportRedisErrors(redis: IORedis): IORedis {
  redis.on('error', (err: Error) => reporter.error(err));
  redis.on('ready', () => reporter.ready());
  return redis;
}

/**
 * A failed Redis command whose failure the caller tolerates (a progress event not appended, say):
 * reported once per outage with the others, not once per command.
 */
export function reportRedisError(err: Error, source: string): void {
  reporter.error(err, source);
}

/** For BullMQ objects (Queue, Worker, QueueEvents), whose 'error' events carry their connections' errors. */
export function reportQueueErrors(emitter: { on(event: 'error', listener: (err: Error) => void): unknown }, source: string): void {
  emitter.on('error', (err: Error) => reporter.error(err, source));
}
