import { availableParallelism } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';

/** The repository root, found from this file whether it runs from src/ (tests) or dist/ (built). */
export const REPO_ROOT = resolve(__dirname, __dirname.includes(`${join('dist', 'libs')}`) ? '../../../..' : '../../..');

export interface AppConfig {
  host: string;
  port: number;
  /** Gateway processes sharing the port (Node cluster); 1 runs the gateway in the launching process. */
  gatewayProcesses: number;
  redisUrl: string;
  databaseUrl: string;
  dataDir: string;
  imagesDir: string;
  modelsDir: string;
  /** Python interpreter of the pinned worker environment. */
  workerPython: string;
  engineCatalogPath: string;
  /** 'auto' gives one worker per visible GPU, or one CPU worker when there is none. */
  workerDevices: string;
  workerPreload: string[];
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  /** A running job with no new step for this long (after its first) has its worker restarted. */
  workerStallTimeoutMs: number;
  /** How long a worker being stopped (hang, deadline) gets between SIGTERM and SIGKILL. */
  workerKillGraceMs: number;
  /** A worker that served this long after its canary has its restart backoff reset. */
  workerHealthyAfterMs: number;
  /** On SIGTERM, how long the supervisor lets running jobs finish before it puts them back in the queue. */
  supervisorGraceMs: number;
  /** BullMQ job lock: a supervisor that stops renewing it (crash, freeze) loses its jobs to the others after this long. */
  queueLockDurationMs: number;
  /** How often each supervisor looks for jobs whose lock expired, to put them back in the queue. */
  queueStalledIntervalMs: number;
  /** How long POST /generate waits for its image before answering 504 with the job id. */
  syncWaitMs: number;
  /** Anonymous calls allowed: only on loopback (the embedded default), and it says so at start. */
  openAccess: boolean;
  /** Secret that signs webhook deliveries (HMAC-SHA256); at least 32 bytes off loopback. */
  webhookSecret: string;
  /** Webhooks may go to loopback, private, CGNAT and unique-local addresses (on-premises receivers). */
  webhookAllowPrivate: boolean;
  /** Largest JSON body the gateway parses: what the largest valid request (ten reference images) needs. */
  maxBodyBytes: number;
  /** Which proxies' X-Forwarded-For/-Proto to believe (Express `trust proxy`); empty: none. */
  trustProxy: string;
  /** Finished generations (records and images) older than this many days are removed; 0 keeps them. */
  retentionDays: number;
  /** Event streams one API key (or the anonymous owner) may hold open at once, across all gateways. */
  sseMaxStreamsPerOwner: number;
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`${name} must be a number, got "${raw}"`);
  return value;
}

function path(env: NodeJS.ProcessEnv, name: string, fallback: string): string {
  const raw = env[name];
  if (!raw) return fallback;
  return isAbsolute(raw) ? raw : resolve(REPO_ROOT, raw);
}

function bool(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (raw !== 'true' && raw !== 'false') throw new Error(`${name} must be "true" or "false", got "${raw}"`);
  return raw === 'true';
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);
const MIN_WEBHOOK_SECRET_BYTES = 32;

/**
 * The public development secret would let anyone forge deliveries, so it stays on loopback. The
 * supervisor listens nowhere: a Redis beyond loopback says it serves a deployment all the same.
 */
function webhookSecret(env: NodeJS.ProcessEnv, host: string, redisUrl: string): string {
  const secret = env.WEBHOOK_SECRET ?? '';
  const redisHost = URL.canParse(redisUrl) ? new URL(redisUrl).hostname.replace(/^\[|\]$/g, '') : '';
  const offLoopback = !LOOPBACK.has(host) ? `HOST is ${host}` : redisHost && !LOOPBACK.has(redisHost) ? `REDIS_URL is on ${redisHost}` : null;
  if (offLoopback && Buffer.byteLength(secret) < MIN_WEBHOOK_SECRET_BYTES) {
    throw new Error(`WEBHOOK_SECRET must be set to at least ${MIN_WEBHOOK_SECRET_BYTES} bytes off loopback (${offLoopback}); e.g. openssl rand -hex 32`);
  }
  return secret || 'flexyface-dev-webhook-secret';
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const dataDir = path(env, 'DATA_DIR', join(REPO_ROOT, '.data'));
  const host = env.HOST || '127.0.0.1';
  // AUTH_MODE=keys forces keys everywhere; open access is refused beyond loopback.
  const authMode = env.AUTH_MODE || (LOOPBACK.has(host) ? 'open' : 'keys');
  if (authMode !== 'open' && authMode !== 'keys') throw new Error(`AUTH_MODE must be "open" or "keys", got "${authMode}"`);
  if (authMode === 'open' && !LOOPBACK.has(host)) throw new Error(`AUTH_MODE=open is only allowed on a loopback HOST, not ${host}`);
  const redisUrl = env.REDIS_URL || 'redis://127.0.0.1:6379';
  return {
    host,
    port: int(env, 'PORT', 3000),
    gatewayProcesses: env.GATEWAY_PROCESSES === 'auto' ? availableParallelism() : Math.max(1, int(env, 'GATEWAY_PROCESSES', 1)),
    redisUrl,
    databaseUrl: env.DATABASE_URL || `file:${join(dataDir, 'flexyface.db')}`,
    dataDir,
    imagesDir: path(env, 'IMAGES_DIR', join(dataDir, 'images')),
    modelsDir: path(env, 'MODELS_DIR', join(dataDir, 'models')),
    workerPython: path(env, 'WORKER_PYTHON', join(REPO_ROOT, 'worker-python/.venv/bin/python')),
    engineCatalogPath: path(env, 'FLEXY_ENGINE_CATALOG', join(REPO_ROOT, 'libs/engines/engine-catalog.json')),
    workerDevices: env.WORKER_DEVICES || 'auto',
    workerPreload: (env.WORKER_PRELOAD || '').split(',').filter(Boolean),
    heartbeatIntervalMs: int(env, 'WORKER_HEARTBEAT_INTERVAL_MS', 2000),
    heartbeatTimeoutMs: int(env, 'WORKER_HEARTBEAT_TIMEOUT_MS', 10000),
    workerStallTimeoutMs: int(env, 'WORKER_STALL_TIMEOUT_MS', 120_000),
    workerKillGraceMs: int(env, 'WORKER_KILL_GRACE_MS', 3000),
    workerHealthyAfterMs: int(env, 'WORKER_HEALTHY_AFTER_MS', 60_000),
    supervisorGraceMs: int(env, 'SUPERVISOR_GRACE_MS', 20_000),
    queueLockDurationMs: int(env, 'QUEUE_LOCK_DURATION_MS', 30_000),
    queueStalledIntervalMs: int(env, 'QUEUE_STALLED_INTERVAL_MS', 15_000),
    syncWaitMs: int(env, 'SYNC_WAIT_MS', 300_000),
    openAccess: authMode === 'open',
    webhookSecret: webhookSecret(env, host, redisUrl),
    webhookAllowPrivate: bool(env, 'WEBHOOK_ALLOW_PRIVATE', false),
    maxBodyBytes: int(env, 'MAX_BODY_BYTES', 16 * 1024 * 1024),
    trustProxy: env.TRUST_PROXY || '',
    retentionDays: int(env, 'RETENTION_DAYS', 30),
    sseMaxStreamsPerOwner: int(env, 'SSE_MAX_STREAMS_PER_KEY', 16),
  };
}

/** Injection token for the AppConfig object. */
export const APP_CONFIG = Symbol('APP_CONFIG');
/** Injection token for the process's shared (non-blocking) ioredis connection. */
export const REDIS = Symbol('REDIS');
