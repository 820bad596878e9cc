import { ENGINE_IDS, type EngineId } from '@flexy/engines';
import { isIP } from 'node:net';
import { z } from 'zod';
import { parseSentinelUrl } from './redis-url';

/**
 * Every environment variable that the gateway, the supervisor, the Python worker and the CLIs read,
 * with its type, default, bounds and meaning: the one place these are written. `loadConfig` parses the
 * environment against it once at start; the README's configuration table is checked against it; the
 * worker's settings (`worker-python/flexy_worker/settings.py`) take their bounds from the JSON that
 * `scripts/generate-catalog.mjs` writes from it.
 *
 * To add a setting: one entry here (a helper below gives it a rule that its error message states),
 * then read it from `AppConfig` (config.ts) and add its row to the README's table.
 */

export type SettingReader = 'gateway' | 'supervisor' | 'worker' | 'models CLI' | 'keys CLI' | 'set-up';

export interface SettingDoc {
  description: string;
  readers: readonly SettingReader[];
  /** The default as the README shows it: a literal default is shown as is; others say what applies. */
  shownDefault: string;
  /** Never echoed back in an error message. */
  secret?: boolean;
  /** A hook for tests (fault injection): unset in production. */
  testHook?: boolean;
}

/** Each setting's documentation, keyed by its schema. */
export const settingDocs = z.registry<SettingDoc>();

interface Documentation {
  description: string;
  readers: readonly SettingReader[];
  /** What the README says when the default is not a literal (derived from another setting, or none). */
  shownDefault?: string;
  secret?: boolean;
  testHook?: boolean;
}

/** A setting given a default always has a value; one without stays optional. */
type WithDefault<T extends z.ZodType, O> = O extends { default: NonNullable<unknown> } ? z.ZodDefault<T> : z.ZodOptional<T>;

/** One variable: how its text parses (a rule below), its default when unset, and its documentation. */
function setting<T extends z.ZodType, const O extends Documentation & { default?: z.output<T> }>(schema: T, o: O): WithDefault<T, O> {
  const literal = o.default;
  const shownDefault = o.shownDefault ?? (literal === undefined ? 'unset' : `\`${String(literal)}\``);
  const result = (o.default === undefined ? schema.optional() : schema.default(o.default as never)) as unknown as WithDefault<T, O>;
  settingDocs.add(result, {
    description: o.description,
    readers: o.readers,
    shownDefault,
    ...(o.secret ? { secret: true } : {}),
    ...(o.testHook ? { testHook: true } : {}),
  });
  return result;
}

// ---- rules: each parses the variable's text and says, in its error, what it accepts ------------------

const range = (min: number, max: number | undefined, unit = '') => (max === undefined ? `≥ ${min}${unit}` : `from ${min} to ${max}${unit}`);

/** A whole number written in decimal digits: `2.5`, `1e3`, `0x10`, `-1` and blanks are refused. */
function integer(min: number, max?: number, unit = '') {
  const rule = `an integer ${range(min, max, unit)}`;
  return z
    .string()
    .trim()
    .regex(/^-?\d+$/, { error: rule })
    .transform(Number)
    .pipe(z.number().int({ error: rule }).min(min, { error: rule }).max(max ?? Number.MAX_SAFE_INTEGER, { error: rule }));
}

/** A duration in whole milliseconds, within sane bounds. */
const millis = (min: number, max: number) => integer(min, max, ' (milliseconds)');

/** A decimal number (`0.5`, `30`) above `gt` and at most `max`. */
function decimal(gt: number, max: number, unit = '') {
  const rule = `a number > ${gt} and ≤ ${max}${unit}`;
  return z
    .string()
    .trim()
    .regex(/^-?(\d+\.?\d*|\.\d+)$/, { error: rule })
    .transform(Number)
    .pipe(z.number().gt(gt, { error: rule }).max(max, { error: rule }));
}

const oneOf = <const V extends readonly [string, ...string[]]>(values: V) => z.enum(values, { error: `one of ${values.join(', ')}` });

/** on/off switches, in the spellings people use. */
const flag = () =>
  z
    .string()
    .trim()
    .toLowerCase()
    .pipe(z.enum(['1', '0', 'true', 'false', 'yes', 'no', 'on', 'off'], { error: 'one of 1, 0, true, false, yes, no, on, off' }))
    .transform((v) => ['1', 'true', 'yes', 'on'].includes(v));

/** Exactly `true` or `false`. */
const trueFalse = () =>
  z
    .string()
    .trim()
    .pipe(z.enum(['true', 'false'], { error: '"true" or "false"' }))
    .transform((v) => v === 'true');

const text = () => z.string().trim();
/** Passwords and tokens are taken as given, spaces included. */
const secretText = () => z.string();
const matching = (pattern: RegExp, rule: string) => z.string().trim().regex(pattern, { error: rule });

/**
 * WORKER_DEVICES: `auto`, `cpu` (or `cpu+cpu…`, a device group of CPU processes; `cpu,cpu`, two CPU
 * workers: the CPU forms stand in for GPUs in tests), or a comma-separated list of workers, each a GPU
 * (index or UUID) or a group of GPUs joined by `+`. A GPU belongs to one worker at most: two workers
 * on one card would fight over its memory.
 */
function workerDevices() {
  const gpu = String.raw`(\d+|(GPU|MIG)-[0-9A-Za-z-]+)`;
  const worker = String.raw`${gpu}(\s*\+\s*${gpu})*`;
  const cpu = String.raw`cpu(\s*\+\s*cpu)*`;
  const shape = new RegExp(String.raw`^(auto|${cpu}(\s*,\s*${cpu})*|${worker}(\s*,\s*${worker})*)$`);
  const rule = 'auto, cpu, or a comma-separated list of GPU indices such as 0,1, where + joins GPUs into one worker (0+1,2+3)';
  return matching(shape, rule).refine(
    (spec) => {
      const gpus = spec.split(/[,+]/).map((s) => s.trim());
      return spec.startsWith('cpu') || spec === 'auto' || new Set(gpus).size === gpus.length;
    },
    { error: 'a list in which each GPU appears once (a GPU belongs to one worker)' },
  );
}

/** A URL whose scheme is one of `protocols` (with the colon, as `URL.protocol` has it). */
function url(...protocols: string[]) {
  const rule = `a URL starting with ${protocols.map((p) => (p === 'file:' ? p : `${p}//`)).join(' or ')}`;
  return z
    .string()
    .trim()
    .refine((value) => URL.canParse(value) && protocols.includes(new URL(value).protocol), { error: rule });
}

/** REDIS_URL: one Redis (redis://, rediss://), or the master a set of Sentinels names (redis-sentinel://). */
function redisUrl() {
  const rule = 'a URL starting with redis:// or rediss://, or redis-sentinel://host:port,host:port,…/<master name>';
  return z
    .string()
    .trim()
    .refine((value) => {
      try {
        if (parseSentinelUrl(value)) return true;
      } catch {
        return false;
      }
      return URL.canParse(value) && ['redis:', 'rediss:'].includes(new URL(value).protocol);
    }, { error: rule });
}

/** The hosts a REDIS_URL reaches: its one host, or every Sentinel of the list. */
function redisHosts(value: string): string[] {
  const sentinel = parseSentinelUrl(value);
  return sentinel ? sentinel.sentinels.map((s) => s.host) : [new URL(value).hostname.replace(/^\[|\]$/g, '')];
}

/** A folder or file; a relative one is taken from the repository root (config.ts resolves it). */
const path = () => z.string().trim();

/** Engine ids separated by commas, each from the catalog. */
const engineList = () =>
  z
    .string()
    .transform((value) => value.split(',').map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.enum(ENGINE_IDS, { error: `a comma-separated list of engine ids (${ENGINE_IDS.join(', ')})` })));

const host = () => z.string().trim().refine((h) => isIP(h) !== 0 || HOSTNAME.test(h), { error: 'an IP address or a host name' });

/** `auto` or a count. */
function gatewayProcesses() {
  const rule = '"auto" or an integer from 1 to 256';
  return z
    .string()
    .trim()
    .regex(/^(auto|\d+)$/, { error: rule })
    .transform((v) => (v === 'auto' ? ('auto' as const) : Number(v)))
    .refine((v) => v === 'auto' || (v >= 1 && v <= 256), { error: rule });
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export const LOOPBACK_HOSTS: readonly string[] = ['127.0.0.1', 'localhost', '::1'];

/** The public development secret would let anyone forge deliveries, so it serves loopback only. */
export const DEV_WEBHOOK_SECRET = 'flexyface-dev-webhook-secret';
const MIN_WEBHOOK_SECRET_BYTES = 32;

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

const ALL_SERVICES = ['gateway', 'supervisor'] as const;

/** The variables, each parsing a string (or nothing). Keys are the variable names. */
const settingsShape = z.object({
  // ---- where things are ----------------------------------------------------------------------------
  HOST: setting(host(), { default: '127.0.0.1', description: 'interface the gateway listens on; anything but loopback requires API keys', readers: ['gateway', 'keys CLI'] }),
  PORT: setting(integer(1, 65535), { default: 3000, description: 'port the gateway listens on', readers: ['gateway'] }),
  GATEWAY_PROCESSES: setting(gatewayProcesses(), {
    default: 1,
    description: 'gateway processes sharing the port (`auto`: one per core); a process that dies is replaced',
    readers: ['gateway'],
  }),
  REDIS_URL: setting(redisUrl(), {
    default: 'redis://127.0.0.1:6379',
    shownDefault: 'a private `redis-server` started by `npm start` (else `redis://127.0.0.1:6379`)',
    description:
      'shared Redis for every gateway and supervisor; `redis-sentinel://host:port,host:port,…/<master name>` reaches the master those Sentinels name and follows it through failovers (a password in the URL is the master\'s)',
    readers: ALL_SERVICES,
  }),
  DATABASE_URL: setting(url('file:', 'postgres:', 'postgresql:'), {
    shownDefault: '`file:$DATA_DIR/flexyface.db` (SQLite)',
    description: '`postgresql://…` for several gateway hosts',
    readers: [...ALL_SERVICES, 'keys CLI'],
  }),
  DATA_DIR: setting(path(), { shownDefault: '`.data`', description: 'database, images and Redis files of the embedded setup', readers: [...ALL_SERVICES, 'keys CLI', 'set-up'] }),
  IMAGES_DIR: setting(path(), { shownDefault: '`$DATA_DIR/images`', description: 'image store (a shared volume when supervisors run on several hosts)', readers: ALL_SERVICES }),
  MODELS_DIR: setting(path(), {
    shownDefault: '`$DATA_DIR/models`',
    description: 'engine snapshots, one folder per engine',
    readers: [...ALL_SERVICES, 'worker', 'models CLI', 'set-up'],
  }),
  FLEXY_ENGINE_CATALOG: setting(path(), {
    shownDefault: '`libs/engines/engine-catalog.json`',
    description: 'the generated engine catalog the worker reads (containers point it at their copy)',
    readers: ['supervisor', 'worker'],
  }),

  // ---- access -----------------------------------------------------------------------------------------
  AUTH_MODE: setting(oneOf(['open', 'keys']), {
    shownDefault: '`open` on loopback, else `keys`',
    description: '`keys` requires an API key on every API call; `open` is allowed only on a loopback `HOST`',
    readers: ['gateway'],
  }),
  ADMIN_PASSWORD: setting(secretText(), {
    secret: true,
    shownDefault: 'generated and printed on loopback; unset elsewhere (login off)',
    description: 'dashboard sign-in of user `admin`',
    readers: ['gateway'],
  }),
  ADMIN_READONLY_PASSWORD: setting(secretText(), {
    secret: true,
    description: 'dashboard sign-in of user `readonly` (off when unset); must differ from `ADMIN_PASSWORD`',
    readers: ['gateway'],
  }),
  WEBHOOK_SECRET: setting(secretText(), {
    secret: true,
    default: DEV_WEBHOOK_SECRET,
    shownDefault: 'a development value, on loopback only',
    description: `signs webhook deliveries (HMAC-SHA256); off loopback (\`HOST\` or the \`REDIS_URL\` host not a loopback address) the gateway and supervisor refuse to start without one of at least ${MIN_WEBHOOK_SECRET_BYTES} bytes (\`openssl rand -hex 32\`)`,
    readers: ALL_SERVICES,
  }),
  WEBHOOK_ALLOW_PRIVATE: setting(trueFalse(), {
    default: false,
    description: '`true` lets webhooks reach loopback, private and unique-local addresses (an on-premises receiver); link-local and metadata addresses stay refused',
    readers: ALL_SERVICES,
  }),

  // ---- requests ------------------------------------------------------------------------------------
  MAX_BODY_BYTES: setting(integer(1024 * 1024, 1024 * 1024 * 1024, ' (bytes)'), {
    default: 16 * 1024 * 1024,
    description: 'largest JSON body the gateway parses (what the largest valid request, ten reference images, needs); larger ones get 413',
    readers: ['gateway'],
  }),
  TRUST_PROXY: setting(text(), {
    shownDefault: 'none',
    description: "which proxies' `X-Forwarded-For`/`-Proto` to believe (Express `trust proxy`): a hop count, `true`/`false`, or a list of addresses, subnets and names (`loopback`, `uniquelocal`)",
    readers: ['gateway'],
  }),
  SSE_MAX_STREAMS_PER_KEY: setting(integer(1, 10_000), {
    default: 16,
    description: 'event streams one API key (or the anonymous owner) may hold open at once, across all gateways',
    readers: ['gateway'],
  }),
  RETENTION_DAYS: setting(integer(0, 36_500), {
    default: 30,
    description: 'finished generations (records and images) older than this many days are removed; `0` keeps them',
    readers: ['supervisor'],
  }),
  SYNC_WAIT_MS: setting(millis(1000, HOUR_MS), { default: 300_000, description: 'how long `/generate` and `/nerd-sandbox` wait before a 504 with the job id', readers: ['gateway'] }),

  // ---- the supervisor and its workers ----------------------------------------------------------------
  SUPERVISOR_HOST_ID: setting(matching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'letters, digits, ".", "_" or "-" (at most 63)'), {
    shownDefault: 'the host name',
    description: "this supervisor's name in worker ids and the dashboard (one per host)",
    readers: ['supervisor'],
  }),
  WORKER_DEVICES: setting(workerDevices(), {
    default: 'auto',
    description:
      '`auto` (one worker per GPU, else CPU), `cpu`, or a GPU list such as `0,1`; `+` joins GPUs into one worker that runs each image across them (`0+1`, `0+1,2+3`, `0,1+2`); for tests, `cpu+cpu` is a two-process group on the CPU and `cpu,cpu` two CPU workers',
    readers: ['supervisor'],
  }),
  CUDA_VISIBLE_DEVICES: setting(text(), {
    description: "CUDA's own variable: with `WORKER_DEVICES=auto`, the GPUs the supervisor starts workers on",
    readers: ['supervisor'],
  }),
  WORKER_PYTHON: setting(path(), {
    shownDefault: '`worker-python/.venv/bin/python`',
    description: 'Python interpreter of the pinned worker environment (also runs `npm run models -- random`)',
    readers: ['supervisor', 'models CLI'],
  }),
  WORKER_PRELOAD: setting(engineList(), { default: [] as EngineId[], shownDefault: 'none', description: 'engines each worker loads before it reports ready', readers: ['supervisor', 'worker'] }),
  WORKER_HEARTBEAT_INTERVAL_MS: setting(millis(100, 60_000), { default: 2000, description: 'how often the supervisor pings each worker', readers: ['supervisor'] }),
  WORKER_HEARTBEAT_TIMEOUT_MS: setting(millis(1000, HOUR_MS), {
    default: 10_000,
    description: 'a worker silent this long is killed and restarted; must exceed the interval',
    readers: ['supervisor'],
  }),
  WORKER_STALL_TIMEOUT_MS: setting(millis(1000, DAY_MS), {
    default: 120_000,
    description: 'a job that showed a step and then none for this long (a kernel that never returns, while the worker still answers pings) has its worker restarted',
    readers: ['supervisor'],
  }),
  WORKER_KILL_GRACE_MS: setting(millis(100, 600_000), { default: 3000, description: 'SIGTERM → SIGKILL when a worker is stopped', readers: ['supervisor'] }),
  WORKER_SPARE: setting(flag(), {
    default: true,
    shownDefault: 'on',
    description: "keeps one spare worker process per device with its imports done (no device memory): a worker that dies is replaced in a second or two instead of a full start",
    readers: ['supervisor'],
  }),
  WORKER_HEALTHY_AFTER_MS: setting(millis(1000, DAY_MS), { default: 60_000, description: "serving this long resets a worker's restart backoff", readers: ['supervisor'] }),
  SUPERVISOR_GRACE_MS: setting(millis(0, HOUR_MS), {
    default: 20_000,
    description: 'on SIGTERM, how long a running job may finish before it is interrupted and put back',
    readers: ['supervisor'],
  }),
  QUEUE_LOCK_DURATION_MS: setting(millis(1000, HOUR_MS), {
    default: 30_000,
    description: 'BullMQ job lock: a supervisor that stops renewing it loses its jobs to the others after this long',
    readers: ['supervisor'],
  }),
  QUEUE_STALLED_INTERVAL_MS: setting(millis(500, HOUR_MS), { default: 15_000, description: 'how often each supervisor looks for jobs whose lock expired', readers: ['supervisor'] }),
  RECONCILE_INTERVAL_MS: setting(millis(1000, DAY_MS), {
    default: 60_000,
    description: 'how often (and at start) a supervisor puts back on the queue every generation the database holds as queued or running with no live BullMQ job (Redis lost it), and finishes sandbox runs and batches whose members all ended',
    readers: ['supervisor'],
  }),
  IMAGE_STORE_RETRY_MS: setting(millis(0, DAY_MS), {
    default: 300_000,
    description: 'how long a supervisor keeps retrying to store a finished image (backoff from 1 s to 30 s, the image kept in memory, never generated again) before the job fails as `storage_unavailable`',
    readers: ['supervisor'],
  }),

  // ---- the Python worker: validated here, handed to each worker in its environment by the supervisor ----
  FLEXY_WORKER_STANDBY: setting(flag(), {
    default: false,
    shownDefault: 'off',
    description: 'set by the supervisor for its spare worker: import everything, then wait for `start` before touching the device',
    readers: ['worker'],
  }),
  FLEXY_ENGINE_CHECK_SECONDS: setting(decimal(0, 86_400, ' (seconds)'), {
    default: 30,
    description: "how often a worker checks its snapshots' files against their manifests (sizes; digests of changed files) and retries an unavailable engine whose backoff ended",
    readers: ['supervisor', 'worker'],
  }),
  FLEXY_WORKER_DEVICE: setting(oneOf(['auto', 'cpu', 'cuda']), {
    default: 'auto',
    description: 'set by the supervisor for each worker (`cpu`, or `cuda` on the GPU it gives it); `auto` when a worker is run by hand',
    readers: ['worker'],
  }),
  FLEXY_WORKER_WORLD_SIZE: setting(integer(1, 64), {
    default: 1,
    description: "set by the supervisor for each worker: its processes, one per device of its group (`WORKER_DEVICES=0+1`: 2); the worker's first process starts the others",
    readers: ['worker'],
  }),
  FLEXY_WORKER_RANK: setting(integer(0, 63), {
    default: 0,
    description: "set by a device group's first process for each process it starts: that process's rank in the group",
    readers: ['worker'],
  }),
  WORKER_VRAM_BUDGET_GB: setting(decimal(0, 4096, ' (GiB)'), {
    shownDefault: "the card's memory less a reserve",
    description: 'how much the worker keeps resident',
    readers: ['supervisor', 'worker'],
  }),
  WORKER_DEVICE_MEMORY_GB: setting(decimal(0, 4096, ' (GiB)'), {
    shownDefault: "the card's memory",
    description: "the most device memory the worker's CUDA allocator may take, as if the card were that small (a shared card)",
    readers: ['supervisor', 'worker'],
  }),
  FLUX2_TEXT_ENCODER: setting(oneOf(['auto', 'local', 'remote']), {
    default: 'auto',
    description: 'FLUX.2 text encoder: `local`, `remote` (the hosted encoder, needs `HF_TOKEN`) or `auto`',
    readers: ['supervisor', 'worker'],
  }),
  FLEXY_TEXT_ENCODER_URL: setting(url('http:', 'https:'), {
    shownDefault: 'the hosted FLUX.2 encoder',
    description: 'address of the remote FLUX.2 text encoder',
    readers: ['supervisor', 'worker'],
  }),
  FLEXY_CPU_THREADS: setting(integer(1, 1024), {
    default: 1,
    description: 'intra-op threads of a CPU worker (the demo setup shares its cores with everything else)',
    readers: ['supervisor', 'worker'],
  }),
  FLEXY_FAST_PATH: setting(text(), {
    shownDefault: 'off',
    description:
      'per-engine GPU fast paths, `ENGINE:OPTIONS,…` (`fast`, `fp8`, `compile`, `sdpa=cudnn`, `attn=cudnn-fp8`, …; the worker checks the options, and takes FP8 only where the engine still fits `WORKER_VRAM_BUDGET_GB` beside its preload set); see the GPU numbers',
    readers: ['supervisor', 'worker'],
  }),
  FLEXY_COMPILE_CACHE: setting(path(), { shownDefault: 'off', description: "folder of torch.compile's caches, kept across worker restarts", readers: ['supervisor', 'worker'] }),
  FLEXY_FP8_ATTN_LOADER: setting(oneOf(['tma', 'ptr']), {
    shownDefault: 'chosen by the GPU',
    description: "forces the FP8 attention kernel's loader (TMA on Hopper and later, else plain loads)",
    readers: ['supervisor', 'worker'],
  }),
  FLEXY_WORKER_LOG_LEVEL: setting(oneOf(['DEBUG', 'INFO', 'WARNING', 'ERROR']), { default: 'INFO', description: "the worker's log level", readers: ['supervisor', 'worker'] }),
  FLEXY_WORKER_EOF_GRACE_S: setting(decimal(0, 3600, ' (seconds)'), {
    default: 30,
    description: 'a worker whose supervisor is gone waits this long for its GPU thread, then exits anyway',
    readers: ['supervisor', 'worker'],
  }),
  HF_TOKEN: setting(secretText(), {
    secret: true,
    description: 'hub token: gated repositories for `npm run models`, and the remote FLUX.2 text encoder',
    readers: ['supervisor', 'worker', 'models CLI'],
  }),

  // ---- weights download (`npm run models`) and set-up --------------------------------------------------
  HUGGING_FACE_HUB_TOKEN: setting(secretText(), { secret: true, description: 'older name of `HF_TOKEN`, read when that is unset', readers: ['models CLI'] }),
  HF_TOKEN_PATH: setting(path(), { description: 'file holding the hub token (a Docker secret), read when no token variable is set', readers: ['models CLI'] }),
  HF_ENDPOINT: setting(url('http:', 'https:'), { default: 'https://huggingface.co', description: 'hub address', readers: ['models CLI'] }),
  HF_HUB_OFFLINE: setting(flag(), { default: false, shownDefault: 'off', description: '`npm run models` refuses to reach the hub (the worker is always offline)', readers: ['models CLI'] }),
  FLEXY_HUB_STALL_SECONDS: setting(decimal(0, 3600, ' (seconds)'), { default: 60, description: 'a download that receives nothing for this long is retried', readers: ['models CLI'] }),
  DEMO_SNAPSHOTS: setting(flag(), { default: true, shownDefault: 'on', description: '`off` stops set-up from building demo snapshots for engines with no weights', readers: ['set-up'] }),

  // ---- fault injection: test hooks of the worker, off unless a test sets them ---------------------------
  FLEXY_FAULT_OOM_ON_JOB: setting(text(), { testHook: true, description: 'test hook: a job whose prompt contains this raises CUDA out-of-memory', readers: ['worker'] }),
  FLEXY_FAULT_CUDA_FATAL_ON_JOB: setting(text(), { testHook: true, description: 'test hook: a job whose prompt contains this poisons the CUDA context', readers: ['worker'] }),
  FLEXY_FAULT_HANG_ON_JOB: setting(text(), { testHook: true, description: 'test hook: a job whose prompt contains this hangs in its second step', readers: ['worker'] }),
  FLEXY_FAULT_EXIT_ON_JOB: setting(matching(/^.+:(-?\d+|SIG[A-Z0-9]+)$/, '<prompt substring>:<exit code|SIGNAME>'), {
    testHook: true,
    description: 'test hook: `<prompt substring>:<exit code|SIGNAME>` exits mid-job',
    readers: ['worker'],
  }),
  FLEXY_FAULT_OOM_ON_PRELOAD: setting(oneOf(ENGINE_IDS), { testHook: true, description: 'test hook: preloading this engine raises CUDA out-of-memory', readers: ['worker'] }),
});

/** The schema of the environment: the variables and the rules between them. */
export const settingsSchema = settingsShape.superRefine(
  (s, ctx) => {
    const authMode = s.AUTH_MODE ?? (LOOPBACK_HOSTS.includes(s.HOST) ? 'open' : 'keys');
    if (authMode === 'open' && !LOOPBACK_HOSTS.includes(s.HOST)) {
      ctx.addIssue({ code: 'custom', path: ['AUTH_MODE'], params: { sentence: true }, message: `AUTH_MODE=open is only allowed on a loopback HOST (${LOOPBACK_HOSTS.join(', ')}), not ${s.HOST}` });
    }
    const [interval, timeout] = [s.WORKER_HEARTBEAT_INTERVAL_MS, s.WORKER_HEARTBEAT_TIMEOUT_MS];
    if (timeout <= interval) {
      ctx.addIssue({ code: 'custom', path: ['WORKER_HEARTBEAT_TIMEOUT_MS'], params: { sentence: true }, message: `WORKER_HEARTBEAT_TIMEOUT_MS (${timeout}) must exceed WORKER_HEARTBEAT_INTERVAL_MS (${interval})` });
    }
    // The supervisor listens nowhere: a Redis beyond loopback says it serves a deployment all the same.
    const redisHost = redisHosts(s.REDIS_URL).find((h) => !LOOPBACK_HOSTS.includes(h));
    const offLoopback = !LOOPBACK_HOSTS.includes(s.HOST) ? `HOST is ${s.HOST}` : redisHost ? `REDIS_URL is on ${redisHost}` : null;
    if (offLoopback && Buffer.byteLength(s.WEBHOOK_SECRET) < MIN_WEBHOOK_SECRET_BYTES) {
      ctx.addIssue({
        code: 'custom',
        path: ['WEBHOOK_SECRET'],
        params: { sentence: true },
        message: `WEBHOOK_SECRET must be set to at least ${MIN_WEBHOOK_SECRET_BYTES} bytes off loopback (${offLoopback}); e.g. openssl rand -hex 32`,
      });
    }
    if (s.ADMIN_READONLY_PASSWORD && s.ADMIN_READONLY_PASSWORD === s.ADMIN_PASSWORD) {
      ctx.addIssue({ code: 'custom', path: ['ADMIN_READONLY_PASSWORD'], params: { sentence: true }, message: 'ADMIN_READONLY_PASSWORD must differ from ADMIN_PASSWORD' });
    }
  },
  // Rules between settings are checked once each setting passed its own rule; their message is the whole sentence.
  { when: (payload) => payload.issues.length === 0 },
);

export type Settings = z.output<typeof settingsSchema>;
export type SettingName = keyof typeof settingsShape.shape;
export const SETTING_NAMES = Object.keys(settingsShape.shape) as SettingName[];

/** The settings the Python worker reads (its environment is its one channel of settings). */
export const WORKER_SETTING_NAMES = SETTING_NAMES.filter((name) => settingDoc(name).readers.includes('worker'));

/**
 * The worker's settings as JSON Schema (types, defaults, bounds, choices), for
 * worker-python/flexy_worker/settings.py: Python takes its rules from here instead of restating them.
 */
export function workerSettingsJson(): string {
  const picked = settingsShape.pick(Object.fromEntries(WORKER_SETTING_NAMES.map((n) => [n, true])) as never);
  const schema = z.toJSONSchema(picked, { io: 'output', unrepresentable: 'any' }) as { properties: Record<string, Record<string, unknown>> };
  for (const name of WORKER_SETTING_NAMES) schema.properties[name].description = settingDoc(name).description;
  return JSON.stringify({ generated_from: 'libs/config/src/settings.ts', schema }, null, 2) + '\n';
}

export function settingDoc(name: SettingName): SettingDoc {
  const doc = settingDocs.get(settingsShape.shape[name]);
  if (!doc) throw new Error(`setting ${name} has no documentation`);
  return doc;
}

/** A configuration that does not pass the schema: one line per problem, each naming its variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

/** The variables the schema knows, with blanks read as unset (as `FOO=` in a compose file means). */
function known(env: NodeJS.ProcessEnv, names: readonly SettingName[]): Record<string, string | undefined> {
  const raw: Record<string, string | undefined> = {};
  for (const name of names) raw[name] = env[name] === '' ? undefined : env[name];
  return raw;
}

function describeProblems(error: z.ZodError, raw: Record<string, string | undefined>): string[] {
  return error.issues.map((issue) => {
    const name = String(issue.path[0] ?? '');
    if ((issue as { params?: { sentence?: boolean } }).params?.sentence) return issue.message;
    const value = raw[name];
    const secret = name in settingsShape.shape && settingDoc(name as SettingName).secret;
    const got = value === undefined ? 'it is unset' : secret ? 'got a value that is not shown' : `got ${JSON.stringify(value)}`;
    return `${name} must be ${issue.message}, ${got}`;
  });
}

/** Parses the environment against the whole schema; throws ConfigError naming every bad variable. */
export function parseSettings(env: NodeJS.ProcessEnv): Settings {
  const raw = known(env, SETTING_NAMES);
  const result = settingsSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(describeProblems(result.error, raw));
  return result.data;
}

/** Parses only `names` (a CLI that needs a few settings is not stopped by a service's bad one). */
export function parseSomeSettings<const K extends SettingName>(env: NodeJS.ProcessEnv, names: readonly K[]): Pick<Settings, K> {
  const raw = known(env, names);
  const mask = Object.fromEntries(names.map((n) => [n, true]));
  const result = settingsShape.pick(mask as never).safeParse(raw);
  if (!result.success) throw new ConfigError(describeProblems(result.error, raw));
  return result.data as unknown as Pick<Settings, K>;
}
