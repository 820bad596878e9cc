import { availableParallelism, hostname } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { LOOPBACK_HOSTS, parseSettings, SETTING_NAMES, settingDoc, type Settings } from './settings';

/** The repository root, found from this file whether it runs from src/ (tests) or dist/ (built). */
export const REPO_ROOT = resolve(__dirname, __dirname.includes(`${join('dist', 'libs')}`) ? '../../../..' : '../../..');

/** What the gateway, the supervisor and the keys CLI read; built from the validated settings (settings.ts). */
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
  /** CUDA_VISIBLE_DEVICES as the supervisor was started with it (undefined when unset). */
  cudaVisibleDevices: string | undefined;
  workerPreload: string[];
  /** This supervisor's name in worker ids and status keys. */
  supervisorHostId: string;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  /** A running job with no new step for this long (after its first) has its worker restarted. */
  workerStallTimeoutMs: number;
  /** How long a worker being stopped (hang, deadline) gets between SIGTERM and SIGKILL. */
  workerKillGraceMs: number;
  /** A worker that served this long after its canary has its restart backoff reset. */
  workerHealthyAfterMs: number;
  /** A spare worker process per device, imports done, to replace one that dies. */
  workerSpare: boolean;
  /** On SIGTERM, how long the supervisor lets running jobs finish before it puts them back in the queue. */
  supervisorGraceMs: number;
  /** BullMQ job lock: a supervisor that stops renewing it (crash, freeze) loses its jobs to the others after this long. */
  queueLockDurationMs: number;
  /** How often each supervisor looks for jobs whose lock expired, to put them back in the queue. */
  queueStalledIntervalMs: number;
  /** How often (and at start) a supervisor re-enqueues what the database holds as queued or running and Redis lost. */
  reconcileIntervalMs: number;
  /** How long storing a finished image is retried (the image kept) before the job fails as storage_unavailable. */
  imageStoreRetryMs: number;
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
  adminPassword: string | undefined;
  adminReadonlyPassword: string | undefined;
  /**
   * The worker's own settings (those whose readers include the worker), validated here and given to
   * each worker in its environment: the worker's one channel of settings.
   */
  workerEnv: Readonly<Record<string, string>>;
}

export const isLoopback = (host: string): boolean => LOOPBACK_HOSTS.includes(host);

const fromRoot = (path: string) => (isAbsolute(path) ? path : resolve(REPO_ROOT, path));

/** The settings the worker reads, as environment variables (paths made absolute: the worker runs elsewhere). */
function workerEnvironment(s: Settings, paths: { modelsDir: string; engineCatalogPath: string }): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of SETTING_NAMES) {
    if (!settingDoc(name).readers.includes('worker')) continue;
    const value = s[name];
    if (value === undefined) continue;
    env[name] = Array.isArray(value) ? value.join(',') : String(value);
  }
  env.MODELS_DIR = paths.modelsDir;
  env.FLEXY_ENGINE_CATALOG = paths.engineCatalogPath;
  if (s.FLEXY_COMPILE_CACHE) env.FLEXY_COMPILE_CACHE = fromRoot(s.FLEXY_COMPILE_CACHE);
  return env;
}

/** The service reads process.env once, on first use: every later call gets the same object. */
let cached: AppConfig | undefined;

/** Validates `env` against the schema and derives the configuration; throws ConfigError naming each bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  if (env === process.env && cached) return cached;
  const s = parseSettings(env);
  const dataDir = fromRoot(s.DATA_DIR ?? '.data');
  const modelsDir = fromRoot(s.MODELS_DIR ?? join(dataDir, 'models'));
  const engineCatalogPath = fromRoot(s.FLEXY_ENGINE_CATALOG ?? 'libs/engines/engine-catalog.json');
  const config: AppConfig = {
    host: s.HOST,
    port: s.PORT,
    gatewayProcesses: s.GATEWAY_PROCESSES === 'auto' ? availableParallelism() : s.GATEWAY_PROCESSES,
    redisUrl: s.REDIS_URL,
    databaseUrl: s.DATABASE_URL ?? `file:${join(dataDir, 'flexyface.db')}`,
    dataDir,
    imagesDir: fromRoot(s.IMAGES_DIR ?? join(dataDir, 'images')),
    modelsDir,
    workerPython: fromRoot(s.WORKER_PYTHON ?? 'worker-python/.venv/bin/python'),
    engineCatalogPath,
    workerDevices: s.WORKER_DEVICES,
    cudaVisibleDevices: s.CUDA_VISIBLE_DEVICES,
    workerPreload: s.WORKER_PRELOAD,
    supervisorHostId: s.SUPERVISOR_HOST_ID ?? hostname(),
    heartbeatIntervalMs: s.WORKER_HEARTBEAT_INTERVAL_MS,
    heartbeatTimeoutMs: s.WORKER_HEARTBEAT_TIMEOUT_MS,
    workerStallTimeoutMs: s.WORKER_STALL_TIMEOUT_MS,
    workerKillGraceMs: s.WORKER_KILL_GRACE_MS,
    workerHealthyAfterMs: s.WORKER_HEALTHY_AFTER_MS,
    workerSpare: s.WORKER_SPARE,
    supervisorGraceMs: s.SUPERVISOR_GRACE_MS,
    queueLockDurationMs: s.QUEUE_LOCK_DURATION_MS,
    queueStalledIntervalMs: s.QUEUE_STALLED_INTERVAL_MS,
    reconcileIntervalMs: s.RECONCILE_INTERVAL_MS,
    imageStoreRetryMs: s.IMAGE_STORE_RETRY_MS,
    syncWaitMs: s.SYNC_WAIT_MS,
    // AUTH_MODE=keys forces keys everywhere; the schema refuses open access beyond loopback.
    openAccess: (s.AUTH_MODE ?? (isLoopback(s.HOST) ? 'open' : 'keys')) === 'open',
    webhookSecret: s.WEBHOOK_SECRET,
    webhookAllowPrivate: s.WEBHOOK_ALLOW_PRIVATE,
    maxBodyBytes: s.MAX_BODY_BYTES,
    trustProxy: s.TRUST_PROXY ?? '',
    retentionDays: s.RETENTION_DAYS,
    sseMaxStreamsPerOwner: s.SSE_MAX_STREAMS_PER_KEY,
    adminPassword: s.ADMIN_PASSWORD,
    adminReadonlyPassword: s.ADMIN_READONLY_PASSWORD,
    workerEnv: workerEnvironment(s, { modelsDir, engineCatalogPath }),
  };
  if (env === process.env) cached = config;
  return config;
}

/** Injection token for the AppConfig object. */
export const APP_CONFIG = Symbol('APP_CONFIG');
/** Injection token for the process's shared (non-blocking) ioredis connection. */
export const REDIS = Symbol('REDIS');
