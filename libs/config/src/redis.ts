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

const SENTINEL_SCHEME = 'redis-sentinel:';

export interface SentinelTarget {
  sentinels: Array<{ host: string; port: number }>;
  name: string;
  db: number;
  username?: string;
  password?: string;
}

/** The Sentinel form of REDIS_URL, or null for a plain redis:// URL. */
export function parseSentinelUrl(url: string): SentinelTarget | null {
  if (!url.startsWith(SENTINEL_SCHEME)) return null;
  // URL() cannot parse a host list; take the authority apart by hand.
  const rest = url.slice(SENTINEL_SCHEME.length).replace(/^\/\//, '');
  const slash = rest.indexOf('/');
  if (slash < 0) throw new Error(`REDIS_URL ${redact(url)}: the master name is missing (redis-sentinel://host:port,…/<master name>)`);
  let authority = rest.slice(0, slash);
  const [name, db = '0', ...extra] = rest.slice(slash + 1).split('/');
  if (!name || extra.length || !/^\d+$/.test(db)) throw new Error(`REDIS_URL ${redact(url)}: expected …/<master name>[/<db>]`);
  let username: string | undefined;
  let password: string | undefined;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    const credentials = authority.slice(0, at);
    authority = authority.slice(at + 1);
    const colon = credentials.indexOf(':');
    username = decodeURIComponent(colon < 0 ? credentials : credentials.slice(0, colon)) || undefined;
    password = colon < 0 ? undefined : decodeURIComponent(credentials.slice(colon + 1));
  }
  const sentinels = authority.split(',').map((entry) => {
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(entry.trim());
    if (!m) throw new Error(`REDIS_URL ${redact(url)}: "${entry}" is not host:port`);
    return { host: m[1], port: Number(m[2]) };
  });
  return { sentinels, name: decodeURIComponent(name), db: Number(db), username, password };
}

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
    // A failover closes the old master's connections; reconnecting asks the Sentinels afresh.
    failoverDetector: true,
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

/** Hostnames and ports only: the URL may carry a password. */
function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
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

/** For BullMQ objects (Queue, Worker, QueueEvents), whose 'error' events carry their connections' errors. */
export function reportQueueErrors(emitter: { on(event: 'error', listener: (err: Error) => void): unknown }, source: string): void {
  emitter.on('error', (err: Error) => reporter.error(err, source));
}
