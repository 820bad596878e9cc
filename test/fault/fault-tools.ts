import { JobName, ORIGIN_PRIORITY, QueueName, type GenerateJobPayload } from '@flexy/contracts';
import { createDatabaseClient, GenerationsRepository, type DatabaseClient, type PrismaService } from '@flexy/persistence';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { redisOptions } from '@flexy/config';
import IORedis from 'ioredis';
import { api, manage, ROOT, startStack, stopProcess, type ManagedProcess, type Stack, type StackOptions } from '../support/stack';

/**
 * Tooling for the fault-injection suite: supervisors started on their own (own working directory,
 * own environment, own Python worker), the Python worker's pid, lines a process prints from now on,
 * direct looks at Redis (BullMQ) and the database, and the measurements behind RELIABILITY.md.
 */

/** Short windows so each fault is detected in seconds; production defaults are in libs/config. */
export const FAST_SUPERVISOR_ENV: NodeJS.ProcessEnv = {
  WORKER_HEARTBEAT_INTERVAL_MS: '500',
  WORKER_HEARTBEAT_TIMEOUT_MS: '3000',
  WORKER_STALL_TIMEOUT_MS: '6000',
  WORKER_KILL_GRACE_MS: '1000',
  WORKER_HEALTHY_AFTER_MS: '10000',
  SUPERVISOR_GRACE_MS: '3000',
  QUEUE_LOCK_DURATION_MS: '6000',
  QUEUE_STALLED_INTERVAL_MS: '2000',
  RECONCILE_INTERVAL_MS: '3000',
  // The canary runs on the preloaded engine, which the suite's jobs use too: no load inside a job.
  WORKER_PRELOAD: 'flux1_dev',
  // Two cores: one torch thread per worker keeps two workers from fighting over both.
  OMP_NUM_THREADS: '1',
};

export const ENGINE = 'flux1_dev';
/** About 0.1 s of worker time on this machine. */
export const TINY = { engine: ENGINE, steps: 1, width: 64, height: 64 } as const;
/** A few seconds of steps: a kill at step 2 lands mid-run. */
export const MEDIUM = { ...TINY, steps: 40, width: 256, height: 256 } as const;
/** About ten seconds of steps: outlasts the grace period and the lock checks. */
export const LONG = { engine: ENGINE, steps: 100, width: 768, height: 768 } as const;

export interface FaultStack extends Stack {
  queue: Queue;
  db: DatabaseClient;
}

/** The stack without supervisors: each test starts its own with the environment its fault needs. */
export async function startFaultStack(env: NodeJS.ProcessEnv = {}, options: Pick<StackOptions, 'aroundRedis'> = {}): Promise<FaultStack> {
  const stack = await startStack({ supervisors: 0, env, ...options });
  // The test's own look at BullMQ goes wherever the services go (through Sentinel when they do).
  const connection = new IORedis(redisOptions(stack.redisUrl, { maxRetriesPerRequest: null }));
  connection.on('error', () => undefined); // Redis is stopped and restarted on purpose
  const queue = new Queue(QueueName.Generation, { connection });
  queue.on('error', () => undefined); // Redis is restarted on purpose in one scenario
  const db = createDatabaseClient(stack.env.DATABASE_URL!);
  const stop = stack.stop.bind(stack);
  return Object.assign(stack, {
    queue,
    db,
    async stop() {
      await queue.close().catch(() => undefined);
      connection.disconnect();
      await db.$disconnect().catch(() => undefined);
      // stack.redis may be a restarted server the stack's own stop() does not know about.
      await stopProcess(stack.gateway);
      await Promise.all(stack.supervisors.map((s) => stopProcess(s)));
      await stopProcess(stack.redis);
      await stop();
    },
  });
}

let supervisorCount = 0;

/**
 * A supervisor in a working directory of its own (as on another host), with its own host id and
 * environment; resolves once its worker passed the canary. It is stopped with the stack.
 */
export async function startSupervisor(stack: Stack, hostId: string, env: NodeJS.ProcessEnv = {}): Promise<ManagedProcess> {
  const cwd = mkdtempSync(join(stack.dataDir, `cwd-${hostId}-`));
  const sup = manage(`supervisor-${hostId}-${++supervisorCount}`, process.execPath, [join(ROOT, 'dist/apps/supervisor/src/main.js')], {
    ...stack.env,
    ...FAST_SUPERVISOR_ENV,
    SUPERVISOR_HOST_ID: hostId,
    ...env,
  }, cwd);
  stack.supervisors.push(sup);
  await sup.waitFor(/ready on/, 240_000);
  return sup;
}

/** Resolves with the first line matching `pattern` that the process prints after this call. */
export function nextLine(p: ManagedProcess, pattern: RegExp, timeoutMs: number): Promise<{ line: string; at: number }> {
  const from = p.output.length;
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      for (let i = from; i < p.output.length; i++) {
        if (pattern.test(p.output[i])) return resolve({ line: p.output[i], at: Date.now() });
      }
      if (Date.now() > deadline) return reject(new Error(`${p.name}: no new line matching ${pattern} within ${timeoutMs} ms; last output:\n${p.output.slice(-25).join('\n')}`));
      setTimeout(tick, 25).unref(); // a watcher that lost a race must not keep Jest alive
    };
    tick();
  });
}

/** The first of several processes to print a line matching `pattern` from now on. */
export function firstLine(ps: ManagedProcess[], pattern: RegExp, timeoutMs: number): Promise<{ p: ManagedProcess; line: string; at: number }> {
  return Promise.any(ps.map((p) => nextLine(p, pattern, timeoutMs).then((r) => ({ p, ...r }))));
}

/**
 * Waits until the process has printed at least `count` lines matching `pattern` (its output reaches
 * the test through a pipe, after whatever the test saw through the API), then returns them all: a
 * check of the log never reads it once.
 */
export async function waitForLines(p: ManagedProcess, pattern: RegExp, count: number, timeoutMs = 30_000): Promise<string[]> {
  await poll(`${p.name} to print ${count} line(s) matching ${pattern}`, async () => linesMatching(p, pattern).length >= count, timeoutMs, 25);
  return linesMatching(p, pattern);
}

/** Lines of the process matching `pattern` (from its start). */
export function linesMatching(p: ManagedProcess, pattern: RegExp): string[] {
  return p.output.filter((l) => pattern.test(l));
}

/** Pids of the supervisor's Python worker processes (its children running flexy_worker): the worker and its spare. */
export function workerProcesses(sup: ManagedProcess): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== sup.child.pid) continue;
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('flexy_worker') && isAlive(Number(entry))) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

/** The pid the supervisor last reported ready (its `ready on … (pid N…` line). */
function lastReadyPid(sup: ManagedProcess): number | null {
  const line = [...sup.output].reverse().find((l) => /ready on .*\(pid \d+/.test(l));
  return line ? Number(/\(pid (\d+)/.exec(line)![1]) : null;
}

/** The supervisor's serving Python worker (not its spare), if it is alive; else null. */
export function workerPid(sup: ManagedProcess): number | null {
  const pid = lastReadyPid(sup);
  return pid && workerProcesses(sup).includes(pid) ? pid : null;
}

/** The supervisor's spare worker process (imports done, waiting to replace the worker), or null. */
export function sparePid(sup: ManagedProcess): number | null {
  const serving = lastReadyPid(sup);
  return workerProcesses(sup).find((pid) => pid !== serving) ?? null;
}

/**
 * Waits until the supervisor's spare worker has done its imports and stands by (so a restart now
 * shows the service's steady state: the spare takes over). Returns its pid.
 */
export async function waitForSpare(sup: ManagedProcess, timeoutMs = 180_000): Promise<number> {
  return poll(`${sup.name}'s spare worker to stand by`, async () => {
    const pid = sparePid(sup);
    return pid && sup.output.some((l) => l.includes(`flexy_worker[${pid}]: standing by`)) ? pid : null;
  }, timeoutMs, 100);
}

/** The worker's pid if it is ready and still runs (not one that is starting or restarting). */
export function servingPid(sup: ManagedProcess): number | null {
  return workerPid(sup);
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return state.slice(state.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Waits for the supervisor's worker to have passed its canary again after `oldPid` died; returns when. */
export async function waitForRestartedWorker(sup: ManagedProcess, oldPid: number, timeoutMs = 180_000): Promise<{ pid: number; at: number }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pid = lastReadyPid(sup);
    if (pid && pid !== oldPid) return { pid, at: Date.now() };
    if (Date.now() > deadline) throw new Error(`${sup.name}: worker not ready again within ${timeoutMs} ms`);
    await sleep(50);
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function poll<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs: number, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: Error | null = null;
  for (;;) {
    // A failing look (Redis restarting, say) counts as "not yet"; the last error is reported on timeout.
    const value = await fn().catch((err: Error) => {
      lastError = err;
      return null;
    });
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`);
    await sleep(everyMs);
  }
}

/** POST /v1/generations; returns the id. */
export async function create(stack: Stack, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<string> {
  const res = await api(stack, 'POST', '/v1/generations', { seed: 1, ...body }, headers);
  if (res.status !== 202) throw new Error(`create answered ${res.status}: ${res.text}`);
  return res.json.id as string;
}

/**
 * Queues a generation the way the gateway does (record first, then the job), with a chosen number
 * of attempts: a fault that fires on every run of a prompt shows its outcome after one attempt.
 */
export async function enqueue(stack: FaultStack, body: { prompt: string; engine: typeof ENGINE; steps: number; width: number; height: number }, attempts: number): Promise<string> {
  const id = `gen_${randomUUID().replace(/-/g, '')}`;
  const { engine, ...settings } = body;
  const params = { negative_prompt: null, seed: 1, guidance: 3.5, num_images: 1, ...settings };
  const payload: GenerateJobPayload = {
    generationId: id,
    engine,
    params,
    origin: 'interactive',
    references: [],
    apiKeyId: null,
    webhookUrl: null,
    sandboxRunId: null,
    batchId: null,
    acceptedAt: Date.now(),
  };
  await new GenerationsRepository({ client: stack.db } as PrismaService).create({ id, engine, params });
  await stack.queue.add(JobName.Generate, payload, {
    jobId: id,
    priority: ORIGIN_PRIORITY.interactive,
    attempts,
    backoff: { type: 'exponential', delay: 1000 },
  });
  return id;
}

/**
 * Stops the stack's redis-server (SIGTERM: an orderly shutdown that fsyncs the AOF; SIGKILL: a crash,
 * losing what the last second's fsync had not written) and starts it again on the same port and data
 * folder, AOF on, as stack.ts starts it. `wipe` deletes its data first (a replaced or flushed instance).
 */
export async function restartRedis(
  stack: Stack,
  downMs: number,
  whileDown: () => Promise<void>,
  options: { signal?: NodeJS.Signals; wipe?: boolean } = {},
): Promise<{ stoppedAt: number; startedAt: number }> {
  await stopProcess(stack.redis, options.signal ?? 'SIGTERM');
  const stoppedAt = Date.now();
  if (options.wipe) rmSync(join(stack.dataDir, 'appendonlydir'), { recursive: true, force: true });
  await Promise.all([whileDown(), sleep(downMs)]);
  stack.redis = startRedis(stack);
  await stack.redis.waitFor(/Ready to accept connections/, 10_000);
  return { stoppedAt, startedAt: Date.now() };
}

function startRedis(stack: Stack): ManagedProcess {
  return manage(`redis-${stack.redisPort}-restarted`, 'redis-server', [
    '--port', String(stack.redisPort), '--bind', '127.0.0.1', '--dir', stack.dataDir, '--save', '', '--appendonly', 'yes', '--maxmemory-policy', 'noeviction',
  ], process.env);
}

/**
 * Makes a folder read-only for the processes writing to it, as a volume gone read-only does (root
 * ignores permissions): a read-only bind mount over it (EROFS), else the immutable attribute on it and
 * everything in it (EPERM). Returns the undo.
 */
export function makeReadOnly(dir: string): () => void {
  const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: 'pipe', encoding: 'utf8' });
  if (run('mount', ['--bind', dir, dir]).status === 0) {
    if (run('mount', ['-o', 'remount,bind,ro', dir]).status === 0) return () => void run('umount', [dir]);
    run('umount', [dir]);
  }
  const set = run('chattr', ['-R', '+i', dir]);
  if (set.status !== 0) throw new Error(`cannot make ${dir} read-only here (no mount, no chattr): ${set.stderr}`);
  return () => void run('chattr', ['-R', '-i', dir]);
}

/** Starts the stack's gateway again (after a test stopped it), on the same port and data. */
export async function restartGateway(stack: Stack): Promise<void> {
  stack.gateway = manage(`gateway-${stack.env.PORT}-restarted`, process.execPath, [join(ROOT, 'dist/apps/gateway/src/main.js')], stack.env);
  await stack.gateway.waitFor(/listening on/, 60_000);
}

/** The generation as the API shows it, once it is no longer queued or running. */
export async function finished(stack: Stack, id: string, timeoutMs = 180_000) {
  return poll(`${id} to finish`, async () => {
    const r = await api(stack, 'GET', `/v1/generations/${id}`);
    return r.status === 200 && !['queued', 'running'].includes(r.json.status) ? r.json : null;
  }, timeoutMs, 100);
}

/** Waits for the generation to end, and checks that it failed with `code` (and a message matching `message`). */
export async function expectFailure(stack: Stack, id: string, code: string, message?: RegExp) {
  const g = await finished(stack, id);
  expect({ status: g.status, code: g.error?.code }).toEqual({ status: 'failed', code });
  if (message) expect(g.error.message).toMatch(message);
  return g;
}

/** Waits until the job has reported at least `step` denoising steps: it is mid-run on a worker. */
export async function midRun(stack: FaultStack, id: string, step = 2, timeoutMs = 120_000): Promise<void> {
  await poll(`${id} to reach step ${step}`, async () => {
    const job = await stack.queue.getJob(id);
    const progress = job?.progress as { step?: number } | undefined;
    return (progress?.step ?? 0) >= step;
  }, timeoutMs);
}

export async function jobState(stack: FaultStack, id: string): Promise<string> {
  const job = await stack.queue.getJob(id);
  return job ? job.getState() : 'missing';
}

/** What is recorded for a generation: the row, its image rows, and its files on disk. */
export async function records(stack: FaultStack, id: string) {
  const rows = await stack.db.generation.findMany({ where: { id }, include: { images: true } });
  const dir = join(stack.dataDir, 'images', id.slice(-2));
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith(`${id}_`)) : [];
  return { rows, images: rows.flatMap((r) => r.images), files };
}

// ---- what was lost -------------------------------------------------------------------------------

/** Failures that are the service's own (a part went away), not the request's: a job ending so was lost. */
export const INFRASTRUCTURE_CODES = new Set(['worker_lost', 'internal', 'queue_unavailable', 'storage_unavailable', 'interrupted']);

export interface LossLook {
  db: DatabaseClient;
  queue: Queue;
  imagesDir: string;
}

export interface LostJob {
  id: string;
  why: string;
}

/**
 * Every accepted job that the service did not carry to an honest end, judged from the three places
 * that hold it: the database (the promise), BullMQ (the delivery) and the image store (the result).
 * A job is kept when it succeeded with one image row and one file per image; when it failed with
 * the outcome its scenario asserts (`expectedFailures`: id → error code), or with a reason of the
 * request's own; or when it was cancelled on request (`cancelledOnPurpose`). Anything else is lost:
 * no record, a record still queued or running (with or without a live job), cancelled with no one
 * asking, failed for an infrastructure reason, or succeeded without its files.
 */
export async function lostJobs(
  look: LossLook,
  ids: string[],
  options: { expectedFailures?: Map<string, string>; cancelledOnPurpose?: Set<string> } = {},
): Promise<LostJob[]> {
  const lost: LostJob[] = [];
  const rows = new Map<string, Awaited<ReturnType<typeof look.db.generation.findMany<{ include: { images: true } }>>>[number]>();
  // In slices: SQLite caps the parameters of one statement.
  for (let i = 0; i < ids.length; i += 500) {
    for (const row of await look.db.generation.findMany({ where: { id: { in: ids.slice(i, i + 500) } }, include: { images: true } })) rows.set(row.id, row);
  }
  for (const id of ids) {
    const row = rows.get(id);
    if (!row) {
      lost.push({ id, why: 'no record' });
      continue;
    }
    if (row.status === 'queued' || row.status === 'running') {
      const job = await look.queue.getJob(id);
      const state = job ? await job.getState() : 'missing';
      lost.push({ id, why: `still ${row.status} in the database; BullMQ job ${state}` });
      continue;
    }
    if (row.status === 'cancelled') {
      if (!options.cancelledOnPurpose?.has(id)) lost.push({ id, why: 'cancelled, though nobody asked' });
      continue;
    }
    if (row.status === 'failed') {
      const expected = options.expectedFailures?.get(id);
      if (expected ? row.errorCode !== expected : INFRASTRUCTURE_CODES.has(row.errorCode ?? 'internal')) {
        lost.push({ id, why: `failed: ${row.errorCode} ${row.errorMessage ?? ''}${expected ? ` (expected ${expected})` : ''}` });
      }
      continue;
    }
    const dir = join(look.imagesDir, id.slice(-2));
    const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith(`${id}_`) && !f.endsWith('.tmp')) : [];
    if (row.images.length !== row.numImages || files.length !== row.numImages) {
      lost.push({ id, why: `succeeded with ${row.images.length} image row(s) and ${files.length} file(s) for ${row.numImages} image(s)` });
    }
  }
  return lost;
}

/** The stack's three places, for `lostJobs`. */
export const lossLook = (stack: FaultStack): LossLook => ({ db: stack.db, queue: stack.queue, imagesDir: join(stack.dataDir, 'images') });

/** Starts a supervisor's worker run over and expects the next tiny job to succeed on it. */
export async function expectServing(stack: Stack, tag: string): Promise<void> {
  const g = await finished(stack, await create(stack, { ...TINY, prompt: `next job after ${tag}` }));
  if (g.status !== 'succeeded') throw new Error(`the job after ${tag} ended ${g.status}: ${JSON.stringify(g.error)}`);
}

// ---- measurements ---------------------------------------------------------------------------------

export interface Measurement {
  scenario: string;
  outcome: string;
  detectionMs: number | null;
  recoveryMs: number | null;
  /** Computed by `lostJobs`; null when the scenario failed before it could count. */
  jobsLost: number | null;
}

/**
 * Runs one scenario and keeps its row whatever happens: the body fills in the row as it learns its
 * figures; if it throws, the row is written with the failure as its outcome, then the error goes on
 * to Jest.
 */
export async function recordScenario(file: string, scenario: string, body: (row: Measurement) => Promise<void>): Promise<void> {
  const row: Measurement = { scenario, outcome: '', detectionMs: null, recoveryMs: null, jobsLost: null };
  try {
    await body(row);
  } catch (err) {
    measure(file, { ...row, outcome: `FAILED: ${(err as Error).message.split('\n')[0].slice(0, 300)}` });
    throw err;
  }
  measure(file, row);
}

/** Puts the computed loss figure on the row; a scenario that lost a job then fails, its row kept. */
export function countLoss(row: Measurement, lost: LostJob[]): void {
  row.jobsLost = lost.length;
  expect(lost).toEqual([]);
}

/** A test file's measurements: cleared before its scenarios, and the table rewritten after them. */
export function reportMeasurements(file: string): void {
  beforeAll(() => resetMeasurements(file));
  afterAll(() => writeReport());
}

const RESULTS_DIR = join(ROOT, 'test-artifacts/fault');
const REPORT = join(ROOT, 'test/fault/RELIABILITY.md');
export const REPORT_COMMAND = 'npm run test:faults';

/** Keeps one scenario's measurement (test-artifacts/fault/<file>.json); `writeReport` turns them into the table. */
export function measure(file: string, m: Measurement): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const path = join(RESULTS_DIR, `${file}.json`);
  const all: Measurement[] = existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : [];
  writeFileSync(path, JSON.stringify([...all.filter((x) => x.scenario !== m.scenario), m], null, 2));
}

export function resetMeasurements(file: string): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, `${file}.json`), '[]');
}

const seconds = (ms: number | null) => (ms === null ? '—' : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);

/** With FAULT_REPORT=1, (re)writes test/fault/RELIABILITY.md from every file's measurements. */
export function writeReport(): void {
  if (process.env.FAULT_REPORT !== '1' || !existsSync(RESULTS_DIR)) return;
  const e = FAST_SUPERVISOR_ENV;
  const rows = readdirSync(RESULTS_DIR)
    .filter((f) => f.endsWith('.json'))
    .flatMap((f) => JSON.parse(readFileSync(join(RESULTS_DIR, f), 'utf8')) as Measurement[])
    .sort((a, b) => Number.parseInt(a.scenario, 10) - Number.parseInt(b.scenario, 10) || a.scenario.localeCompare(b.scenario));
  const table = [
    '| scenario | outcome | detection | recovery | jobs lost |',
    '|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.scenario} | ${r.outcome} | ${seconds(r.detectionMs)} | ${seconds(r.recoveryMs)} | ${r.jobsLost ?? '—'} |`),
  ];
  const text = [
    '## Reliability',
    '',
    'Each fault below is injected into the real stack (a private `redis-server` with AOF, SQLite, supervisors',
    'with their real Python workers on the demo snapshots, the gateway; `npm start` itself for 11 and 12; a',
    'master, a replica and three Sentinels for 15) by `test/fault`, and each outcome is asserted there.',
    'Detection: from the fault to the moment the system acted on it (worker stopped, job failed over, job',
    'handed back, engine reported unavailable, lost job put back). Recovery: from the fault (or its end) to the',
    'affected jobs, or the next one, finished and recorded. Jobs lost is computed in every scenario from the',
    'database, BullMQ and the image store: an accepted job that is not `succeeded` with one image row and one',
    'file per image, or `failed` with the outcome the scenario asserts or a reason of its own (never an',
    'infrastructure one), counts as lost. A scenario that fails still writes its row, with the failure.',
    '',
    ...table,
    '',
    `Measured with \`${REPORT_COMMAND}\` on ${new Date().toISOString().slice(0, 10)}, on a 2-core machine shared with`,
    'other work, CPU workers on the demo snapshots. A fresh worker process spends most of its start importing',
    'torch and diffusers (15–40 s here, depending on the load); a restart takes over the slot\'s spare, which has',
    'done that already, and is ready in a second or two once the spare stands by. The suite shortens the windows through the',
    `environment: heartbeat every ${e.WORKER_HEARTBEAT_INTERVAL_MS} ms and silent limit ${e.WORKER_HEARTBEAT_TIMEOUT_MS} ms (defaults 2000 / 10000), no-step limit ${e.WORKER_STALL_TIMEOUT_MS} ms (120000),`,
    `SIGTERM→SIGKILL ${e.WORKER_KILL_GRACE_MS} ms (3000), supervisor grace ${e.SUPERVISOR_GRACE_MS} ms (20000), BullMQ lock ${e.QUEUE_LOCK_DURATION_MS} ms (30000),`,
    `stalled check every ${e.QUEUE_STALLED_INTERVAL_MS} ms (15000), backoff reset after ${e.WORKER_HEALTHY_AFTER_MS} ms of serving (60000), reconcile every ${e.RECONCILE_INTERVAL_MS} ms (60000). With the defaults,`,
    'a silent worker is caught within 10–12 s and a crashed supervisor\'s job moves within 30–60 s.',
    'Scenarios 2b, 3a, 3b, 3c and 9b queue their job with one attempt (the injected fault fires on every run of',
    'its prompt); the others go through the gateway with its three attempts. Scenario 10 sends 64×64 one-step',
    'flux1_dev jobs through the gateway at a steady rate to two supervisors, one CPU worker each. Scenario 19 (`npm run',
    'test:chaos` for 300 jobs; the normal suite runs 30) sends two-step 64×64 jobs over all four engines to two',
    'supervisors while a seeded schedule applies one fault after another: a worker killed or frozen, a supervisor',
    'killed or stopped and started again, Redis killed, restarted empty or stalled, the image store read-only, an',
    'engine\'s snapshot corrupted.',
    '',
  ].join('\n');
  writeFileSync(REPORT, text);
}

export { stopProcess };
