import IORedis from 'ioredis';
import { api, type ManagedProcess } from '../support/stack';
import {
  countLoss,
  create,
  enqueue,
  expectFailure,
  expectServing,
  FAST_SUPERVISOR_ENV,
  type FaultStack,
  finished,
  firstLine,
  isAlive,
  jobState,
  linesMatching,
  LONG,
  lossLook,
  lostJobs,
  type Measurement,
  MEDIUM,
  midRun,
  nextLine,
  poll,
  records,
  recordScenario,
  reportMeasurements,
  restartRedis,
  startFaultStack,
  startSupervisor,
  TINY,
  waitForLines,
  waitForRestartedWorker,
  waitForSpare,
  workerPid,
} from './fault-tools';

/**
 * Scenarios 1–9 of the fault-injection suite, on one stack whose supervisors take turns: each
 * supervisor's Python worker reads its fault-injection settings at start, so the scenarios that need
 * another setting (or a supervisor kill) continue on the next supervisor.
 */

jest.setTimeout(300_000);

const FILE = 'faults';
const HEARTBEAT_TIMEOUT_MS = Number(FAST_SUPERVISOR_ENV.WORKER_HEARTBEAT_TIMEOUT_MS);
const HEARTBEAT_INTERVAL_MS = Number(FAST_SUPERVISOR_ENV.WORKER_HEARTBEAT_INTERVAL_MS);
const GRACE_MS = Number(FAST_SUPERVISOR_ENV.SUPERVISOR_GRACE_MS);
const STALL_TIMEOUT_MS = Number(FAST_SUPERVISOR_ENV.WORKER_STALL_TIMEOUT_MS);

let stack: FaultStack;
/** The supervisor the next scenario runs on. */
let sup: ManagedProcess;

reportMeasurements(FILE);

beforeAll(async () => {
  stack = await startFaultStack();
  sup = await startSupervisor(stack, 'host-a', {
    FLEXY_FAULT_EXIT_ON_JOB: 'exit-zero-now:0',
    FLEXY_FAULT_OOM_ON_JOB: 'oom-me-now',
    FLEXY_FAULT_CUDA_FATAL_ON_JOB: 'poison-cuda-now',
    FLEXY_FAULT_HANG_ON_JOB: 'hang-in-kernel',
  });
}, 300_000);

afterAll(async () => {
  await stack?.stop();
});

/**
 * What a scenario lost: every job accepted since `since` (recorded; a create refused with 503 left a
 * `queue_unavailable` record and was never accepted), judged from the database, BullMQ and the image
 * store. `expectedFailures` are the scenario's asserted outcomes (an injected fault that fires on
 * every run of its prompt).
 */
async function lostSince(since: Date, expectedFailures = new Map<string, string>()) {
  const rows = await stack.db.generation.findMany({ where: { createdAt: { gte: since } }, select: { id: true, errorCode: true } });
  const accepted = rows.filter((r) => r.errorCode !== 'queue_unavailable').map((r) => r.id);
  return lostJobs(lossLook(stack), accepted, { expectedFailures });
}

/**
 * The end of a scenario in which a worker died on job `id` (so the job failed as `code`): the worker
 * is replaced, the next job succeeds, and nothing else was lost since `since`.
 */
async function workerReplaced(row: Measurement, host: ManagedProcess, oldPid: number, since: Date, id: string, code: string, tag: string) {
  await waitForRestartedWorker(host, oldPid);
  await expectServing(stack, tag);
  countLoss(row, await lostSince(since, new Map([[id, code]])));
}

/** One result: one succeeded row, one image row, one file. */
async function expectOneResult(id: string) {
  const r = await records(stack, id);
  expect(r.rows).toHaveLength(1);
  expect(r.rows[0].status).toBe('succeeded');
  expect(r.images).toHaveLength(1);
  expect(r.files).toEqual([`${id}_0.png`]);
  return r.rows[0];
}

const noMissingLock = (p: ManagedProcess) => expect(linesMatching(p, /Missing lock/i)).toEqual([]);

describe('worker faults (host-a)', () => {
  it('8. the same create sent several times with one Idempotency-Key makes one generation and one job', () =>
    recordScenario(FILE, '8. same create sent 4 times (3 at once), one Idempotency-Key', async (row) => {
      const since = new Date(Date.now() - 1);
      const body = { ...TINY, prompt: 'idempotent create', seed: 8 };
      const headers = { 'idempotency-key': `fault-8-${Date.now()}` };
      // Three at once (a client retrying on a timeout while the first is still in flight), then one more.
      const racing = await Promise.all([1, 2, 3].map(() => api(stack, 'POST', '/v1/generations', body, headers)));
      const again = await api(stack, 'POST', '/v1/generations', body, headers);
      const first = racing[0];
      for (const r of [...racing, again]) {
        expect(r.status).toBe(202);
        expect(r.json.id).toBe(first.json.id);
      }
      expect(racing.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(2);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      const g = await finished(stack, first.json.id);
      expect(g.status).toBe('succeeded');
      expect(await stack.db.generation.count({ where: { prompt: body.prompt } })).toBe(1);
      expect((await stack.queue.getJobs(['completed', 'waiting', 'prioritized', 'active', 'delayed', 'failed'])).filter((j) => j.data.params?.prompt === body.prompt)).toHaveLength(1);
      await expectOneResult(first.json.id);
      const lost = await lostSince(since);
      countLoss(row, lost);
      Object.assign(row, { outcome: 'one generation, one job, one image; every repeat answered the same id with `Idempotent-Replayed: true`', detectionMs: null, recoveryMs: null });
    }));

  it('9a. an injected OOM fails that job as `oom` after one retry; the worker keeps serving', () =>
    recordScenario(FILE, '9a. injected OOM', async (row) => {
      const since = new Date(Date.now() - 1);
      const pid = workerPid(sup)!;
      const t0 = Date.now();
      const id = await create(stack, { ...TINY, prompt: 'oom-me-now' });
      await expectFailure(stack, id, 'oom');
      const failedAt = Date.now();
      expect((await records(stack, id)).rows[0].attempts).toBe(2);
      expect(workerPid(sup)).toBe(pid);
      expect(await waitForLines(sup, new RegExp(`job=${id} out of memory`), 2)).toHaveLength(2);
      await expectServing(stack, 'oom');
      expect(workerPid(sup)).toBe(pid);
      // Counted once (not per attempt), with its error code, by the supervisor that ran it.
      const outcome = /^flexy_generation_outcomes_total\{engine="[a-z0-9_]+",status="failed",error_code="oom",supervisor="[^"]+"\} (\d+)$/m;
      const counted = await poll('the oom outcome in /metrics', async () => outcome.exec(await (await fetch(`${stack.url}/metrics`)).text()), 30_000, 250);
      expect(Number(counted[1])).toBe(1);
      const lost = await lostSince(since, new Map([[id, 'oom']]));
      countLoss(row, lost);
      Object.assign(row, { outcome: 'job failed as `oom` after 1 retry; same worker process served the next job', detectionMs: failedAt - t0, recoveryMs: Date.now() - failedAt });
    }));

  it('7. a deleted job lock aborts the GPU run; the job runs again once and is recorded once', () =>
    recordScenario(FILE, '7. job lock deleted mid-run', async (row) => {
      const since = new Date(Date.now() - 1);
      const id = await create(stack, { ...LONG, prompt: 'lock deleted mid-run' });
      await midRun(stack, id);
      const aborted = nextLine(sup, new RegExp(`job=${id} interrupted`), 60_000);
      const redis = new IORedis(stack.redisUrl);
      const t0 = Date.now();
      expect(await redis.del(`bull:generation:${id}:lock`)).toBe(1);
      redis.disconnect();
      const { at } = await aborted;
      const g = await finished(stack, id);
      const doneAt = Date.now();
      expect(g.status).toBe('succeeded');
      const record = await expectOneResult(id);
      expect(record.attempts).toBe(2);
      await waitForLines(sup, new RegExp(`lost the lock of ${id}`), 1);
      expect(await waitForLines(sup, new RegExp(`job=${id} succeeded`), 1)).toHaveLength(1);
      noMissingLock(sup);
      const lost = await lostSince(since);
      countLoss(row, lost);
      Object.assign(row, { outcome: 'GPU run aborted between steps; the stalled check re-queued it; ran once more; one record, one file', detectionMs: at - t0, recoveryMs: doneAt - t0 });
    }));

  it('1. kill -9 of the Python worker mid-job: retried on the restarted worker; one record, one file', () =>
    recordScenario(FILE, '1. kill -9 the worker mid-job', async (row) => {
      const since = new Date(Date.now() - 1);
      await waitForSpare(sup); // a restart shows the steady state: the spare takes over
      const id = await create(stack, { ...MEDIUM, prompt: 'worker kill -9' });
      await midRun(stack, id);
      const pid = workerPid(sup)!;
      const detected = nextLine(sup, new RegExp(`${id} attempt 1 failed: .*killed by SIGKILL`), 30_000);
      const t0 = Date.now();
      process.kill(pid, 'SIGKILL');
      const { at } = await detected;
      const restarted = await waitForRestartedWorker(sup, pid);
      const g = await finished(stack, id);
      const doneAt = Date.now();
      expect(g.status).toBe('succeeded');
      expect((await expectOneResult(id)).attempts).toBe(2);
      const lost = await lostSince(since);
      countLoss(row, lost);
      Object.assign(row, { outcome: `retried on the restarted worker (ready ${((restarted.at - t0) / 1000).toFixed(1)} s after the kill); succeeded; one record, one file`, detectionMs: at - t0, recoveryMs: doneAt - t0 });
    }));

  it('2. SIGSTOP of the worker: caught within the heartbeat window, killed, restarted, job retried', () =>
    recordScenario(FILE, '2. SIGSTOP the worker', async (row) => {
      const since = new Date(Date.now() - 1);
      await waitForSpare(sup); // a restart shows the steady state: the spare takes over
      const id = await create(stack, { ...MEDIUM, prompt: 'worker sigstop' });
      await midRun(stack, id);
      const pid = workerPid(sup)!;
      const detected = nextLine(sup, /stopping: missed heartbeats/, 30_000);
      const t0 = Date.now();
      process.kill(pid, 'SIGSTOP');
      const { at } = await detected;
      expect(at - t0).toBeLessThanOrEqual(HEARTBEAT_TIMEOUT_MS + HEARTBEAT_INTERVAL_MS + 1000);
      await poll('the stopped worker to be gone', async () => !isAlive(pid), 10_000);
      await waitForRestartedWorker(sup, pid);
      const g = await finished(stack, id);
      const doneAt = Date.now();
      expect(g.status).toBe('succeeded');
      expect((await expectOneResult(id)).attempts).toBe(2);
      const lost = await lostSince(since);
      countLoss(row, lost);
      Object.assign(row, { outcome: `silent worker stopped (SIGTERM, then SIGKILL) within the ${HEARTBEAT_TIMEOUT_MS} ms window, restarted; job retried and succeeded`, detectionMs: at - t0, recoveryMs: doneAt - t0 });
    }));

  it('2b. a hang inside a step (pongs keep coming, steps stop): caught by WORKER_STALL_TIMEOUT_MS, restarted; the next job succeeds', () =>
    recordScenario(FILE, '2b. hang inside a step', async (row) => {
      const since = new Date(Date.now() - 1);
      await waitForSpare(sup); // a restart shows the steady state: the spare takes over
      const pid = workerPid(sup)!;
      const heartbeatKills = linesMatching(sup, /missed heartbeats/).length;
      const hung = nextLine(sup, /fault injection: hanging inside a step/, 60_000);
      // One attempt: the fault fires on every run of this prompt.
      const id = await enqueue(stack, { ...TINY, steps: 4, prompt: 'hang-in-kernel' }, 1);
      const detected = nextLine(sup, new RegExp(`stopping: no step of job ${id} for \\d+ ms \\(hung inside step 2\\)`), 60_000);
      const [{ at: t0 }, { at }] = await Promise.all([hung, detected]);
      // Heartbeats alone never fire here: the worker keeps answering pings while its step hangs.
      expect(linesMatching(sup, /missed heartbeats/)).toHaveLength(heartbeatKills);
      expect(at - t0).toBeGreaterThanOrEqual(STALL_TIMEOUT_MS - 1000);
      expect(at - t0).toBeLessThanOrEqual(STALL_TIMEOUT_MS + HEARTBEAT_INTERVAL_MS + 2000);
      await expectFailure(stack, id, 'worker_lost', /no step of job .* \(hung inside step 2\)/);
      await poll('the hung worker to be gone', async () => !isAlive(pid), 10_000);
      await workerReplaced(row, sup, pid, since, id, 'worker_lost', 'hang');
      Object.assign(row, { outcome: `no step for ${STALL_TIMEOUT_MS} ms while pongs kept coming: worker stopped and restarted; job failed \`worker_lost\` (one attempt allowed); next job succeeded`, detectionMs: at - t0, recoveryMs: Date.now() - t0 });
    }));

  it('3a. worker exits 0 mid-job: the job fails with that reason; the next job succeeds', () =>
    recordScenario(FILE, '3a. worker exits 0 mid-job', async (row) => {
      const since = new Date(Date.now() - 1);
      await waitForSpare(sup); // a restart shows the steady state: the spare takes over
      const pid = workerPid(sup)!;
      const crashed = nextLine(sup, /fault injection: exiting mid-job with 0/, 60_000);
      // One attempt: the fault fires on every run of this prompt.
      const id = await enqueue(stack, { ...TINY, prompt: 'exit-zero-now' }, 1);
      const detected = nextLine(sup, new RegExp(`${id} attempt 1 failed`), 60_000);
      await expectFailure(stack, id, 'worker_lost', new RegExp(`exited with code 0 while running ${id}`));
      const [{ at: t0 }, { at }] = await Promise.all([crashed, detected]);
      await workerReplaced(row, sup, pid, since, id, 'worker_lost', 'exit 0');
      Object.assign(row, { outcome: '`worker_lost: … exited with code 0 while running <job>`; worker restarted; next job succeeded', detectionMs: at - t0, recoveryMs: Date.now() - t0 });
    }));

  it('3c. worker killed by SIGSEGV mid-job: the job fails with that reason; the next job succeeds', () =>
    recordScenario(FILE, '3c. worker killed by SIGSEGV mid-job', async (row) => {
      const since = new Date(Date.now() - 1);
      await waitForSpare(sup); // a restart shows the steady state: the spare takes over
      const id = await enqueue(stack, { ...MEDIUM, prompt: 'segfault mid-job' }, 1);
      await midRun(stack, id);
      const pid = workerPid(sup)!;
      const detected = nextLine(sup, new RegExp(`${id} attempt 1 failed`), 30_000);
      const t0 = Date.now();
      process.kill(pid, 'SIGSEGV');
      const { at } = await detected;
      await expectFailure(stack, id, 'worker_lost', new RegExp(`killed by SIGSEGV while running ${id}`));
      await workerReplaced(row, sup, pid, since, id, 'worker_lost', 'SIGSEGV');
      Object.assign(row, { outcome: '`worker_lost: … was killed by SIGSEGV while running <job>`; worker restarted; next job succeeded', detectionMs: at - t0, recoveryMs: Date.now() - t0 });
    }));

  it('9b. an injected fatal CUDA error: worker exits 70, restarts at once, passes the canary, next job succeeds', () =>
    recordScenario(FILE, '9b. injected fatal CUDA error', async (row) => {
      const since = new Date(Date.now() - 1);
      await waitForSpare(sup); // a restart shows the steady state: the spare takes over
      const pid = workerPid(sup)!;
      const poisoned = nextLine(sup, /CUDA context is poisoned/, 60_000);
      const restartNow = nextLine(sup, /restarting host-a\/cpu in 0 ms/, 60_000);
      // The restarted worker loads its preload set, and the engine passes its canary there, before it is ready.
      const canary = nextLine(sup, /canary of flux1_dev passed/, 240_000);
      const id = await enqueue(stack, { ...TINY, prompt: 'poison-cuda-now' }, 1);
      await expectFailure(stack, id, 'cuda_fatal');
      const [{ at: t0 }, { at }] = await Promise.all([poisoned, restartNow]);
      await waitForRestartedWorker(sup, pid);
      await canary;
      await waitForLines(sup, /exited with code 70/, 1);
      await expectServing(stack, 'CUDA fatal');
      const lost = await lostSince(since, new Map([[id, 'cuda_fatal']]));
      countLoss(row, lost);
      Object.assign(row, { outcome: 'job failed as `cuda_fatal`; worker exited 70, restarted with no backoff, canary passed; next job succeeded', detectionMs: at - t0, recoveryMs: Date.now() - t0 });
    }));

  it('6. Redis restarted mid-run (AOF on): no queued job lost; the gateway answers 503 fast while it is down; work resumes', () =>
    recordScenario(FILE, '6. Redis restarted mid-run (AOF)', async (row) => {
      const since = new Date(Date.now() - 1);
      const ids = [await create(stack, { ...LONG, prompt: 'redis restart 0' })];
      for (let i = 1; i < 5; i++) ids.push(await create(stack, { ...TINY, prompt: `redis restart ${i}` }));
      await midRun(stack, ids[0]);
      let refusedInMs = 0;
      let createStatus = 0;
      let readyStatus = 0;
      const { stoppedAt, startedAt } = await restartRedis(stack, 3000, async () => {
        const t = Date.now();
        createStatus = (await api(stack, 'POST', '/v1/generations', { ...TINY, prompt: 'while redis is down' })).status;
        refusedInMs = Date.now() - t;
        readyStatus = (await api(stack, 'GET', '/health/ready')).status;
      });
      expect(createStatus).toBe(503);
      expect(refusedInMs).toBeLessThan(2000);
      expect(readyStatus).toBe(503);
      for (const id of ids) expect((await finished(stack, id)).status).toBe('succeeded');
      const doneAt = Date.now();
      for (const id of ids) await expectOneResult(id);
      // The gateway records before it queues; a create the queue refused is left failed, never queued.
      const refused = await stack.db.generation.findMany({ where: { prompt: 'while redis is down' } });
      expect(refused.map((r) => [r.status, r.errorCode])).toEqual(refused.length ? [['failed', 'queue_unavailable']] : []);
      expect(refused.length ? await stack.queue.getJob(refused[0].id) : undefined).toBeUndefined();
      await expectServing(stack, 'the Redis restart');
      const lost = await lostSince(since);
      countLoss(row, lost);
      Object.assign(row, { outcome: `all ${ids.length} jobs queued before the restart succeeded, once each; creates answered 503 in ${refusedInMs} ms while Redis was down; supervisor resumed by itself`, detectionMs: refusedInMs, recoveryMs: doneAt - startedAt });
      expect(startedAt).toBeGreaterThan(stoppedAt);
    }));
});

describe('supervisor faults', () => {
  /** host-b and host-c, both with the exit-1 fault, so scenario 3b holds whichever takes the job. */
  let pair: ManagedProcess[] = [];

  it('5. SIGTERM of the supervisor during a long job: handed back within the grace period, exit 0, no "Missing lock"; another supervisor finishes it', () =>
    recordScenario(FILE, '5. SIGTERM the supervisor during a long job', async (row) => {
      const since = new Date(Date.now() - 1);
      const id = await create(stack, { ...LONG, prompt: 'supervisor sigterm' });
      await midRun(stack, id);
      const pid = workerPid(sup)!;
      const t0 = Date.now();
      sup.child.kill('SIGTERM');
      await poll(`${id} back in the queue`, async () => ['waiting', 'prioritized'].includes(await jobState(stack, id)), GRACE_MS + 15_000, 20);
      const backAt = Date.now();
      expect(backAt - t0).toBeLessThan(GRACE_MS + 5000);
      expect((await sup.exited()).code).toBe(0);
      noMissingLock(sup);
      expect(linesMatching(sup, new RegExp(`${id} put back in the queue`))).toHaveLength(1);
      expect(linesMatching(sup, new RegExp(`job=${id} succeeded`))).toEqual([]);
      await poll('the old worker to be gone', async () => !isAlive(pid), 10_000);
      expect((await records(stack, id)).rows[0].status).toBe('queued');

      pair = await Promise.all(['host-b', 'host-c'].map((host) => startSupervisor(stack, host, { FLEXY_FAULT_EXIT_ON_JOB: 'exit-one-now:1' })));
      const g = await finished(stack, id);
      const doneAt = Date.now();
      expect(g.status).toBe('succeeded');
      await expectOneResult(id);
      const lost = await lostSince(since);
      countLoss(row, lost);
      Object.assign(row, { outcome: `job interrupted between steps after the ${GRACE_MS} ms grace and put back at the head of the queue; exit 0; no "Missing lock"; finished once by a supervisor started afterwards`, detectionMs: backAt - t0, recoveryMs: doneAt - t0 });
    }));

  it('3b. worker exits 1 mid-job: the job fails with that reason; the next job succeeds', () =>
    recordScenario(FILE, '3b. worker exits 1 mid-job', async (row) => {
      const since = new Date(Date.now() - 1);
      await Promise.all(pair.map((p) => waitForSpare(p)));
      const crashed = firstLine(pair, /fault injection: exiting mid-job with 1/, 60_000);
      const detected = firstLine(pair, /attempt 1 failed: .*exited with code 1 while running/, 60_000);
      const id = await enqueue(stack, { ...TINY, prompt: 'exit-one-now' }, 1);
      const [{ p: host, at: t0, line }, { at }] = await Promise.all([crashed, detected]);
      const pid = Number(/flexy_worker\[(\d+)\]/.exec(line)![1]);
      await expectFailure(stack, id, 'worker_lost', new RegExp(`exited with code 1 while running ${id}`));
      expect(linesMatching(host, new RegExp(`${id} attempt 1 failed: .*exited with code 1`))).toHaveLength(1);
      await workerReplaced(row, host, pid, since, id, 'worker_lost', 'exit 1');
      Object.assign(row, { outcome: '`worker_lost: … exited with code 1 while running <job>`; worker restarted; next job succeeded', detectionMs: at - t0, recoveryMs: Date.now() - t0 });
    }));

  it('4. kill -9 of the supervisor mid-job: the other supervisor picks the stalled job up; one result; the orphaned worker exits', () =>
    recordScenario(FILE, '4. kill -9 the supervisor mid-job', async (row) => {
      const since = new Date(Date.now() - 1);
      const id = await create(stack, { ...LONG, prompt: 'supervisor kill -9' });
      await midRun(stack, id);
      const runningOn = ((await stack.queue.getJob(id))!.progress as { workerId: string }).workerId;
      const victim = pair.find((p) => runningOn.startsWith(`${hostOf(p)}/`))!;
      const survivor = pair.find((p) => p !== victim)!;
      const orphan = workerPid(victim)!;
      const picked = nextLine(survivor, new RegExp(`job=${id} started`), 60_000);
      const t0 = Date.now();
      victim.child.kill('SIGKILL');
      const { at } = await picked;
      const g = await finished(stack, id);
      const doneAt = Date.now();
      expect(g.status).toBe('succeeded');
      const record = await expectOneResult(id);
      expect(record.workerId).toBe(`${hostOf(survivor)}/cpu`);
      await poll('the orphaned worker to exit', async () => !isAlive(orphan), 60_000);
      noMissingLock(survivor);
      sup = survivor;
      const lost = await lostSince(since);
      countLoss(row, lost);
      Object.assign(row, { outcome: 'the job\'s lock expired and the other supervisor\'s stalled check re-queued it; it ran there and was recorded once; the orphaned worker exited on its own', detectionMs: at - t0, recoveryMs: doneAt - t0 });
    }));

  it('5b. SIGTERM while a short job runs: it finishes within the grace period and the supervisor exits 0', () =>
    recordScenario(FILE, '5b. SIGTERM the supervisor during a short job', async (row) => {
      const since = new Date(Date.now() - 1);
      const id = await create(stack, { ...MEDIUM, prompt: 'finish before exit' });
      await midRun(stack, id, 1);
      const t0 = Date.now();
      sup.child.kill('SIGTERM');
      expect((await sup.exited()).code).toBe(0);
      const exitedAt = Date.now();
      expect(exitedAt - t0).toBeLessThan(GRACE_MS + 15_000);
      const g = await finished(stack, id, 10_000);
      expect(g.status).toBe('succeeded');
      await expectOneResult(id);
      expect(linesMatching(sup, /put back in the queue/)).toEqual([]);
      noMissingLock(sup);
      const lost = await lostSince(since);
      countLoss(row, lost);
      Object.assign(row, { outcome: 'job finished within the grace period and was recorded; exit 0', detectionMs: null, recoveryMs: exitedAt - t0 });
    }));
});

const hostOf = (p: ManagedProcess) => /supervisor-(host-[a-z])-/.exec(p.name)![1];
