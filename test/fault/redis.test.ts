import { api, stopProcess, type ManagedProcess } from '../support/stack';
import {
  countLoss,
  create,
  FAST_SUPERVISOR_ENV,
  type FaultStack,
  finished,
  LONG,
  lossLook,
  lostJobs,
  MEDIUM,
  midRun,
  nextLine,
  poll,
  recordScenario,
  reportMeasurements,
  restartGateway,
  restartRedis,
  sleep,
  startFaultStack,
  startSupervisor,
  TINY,
} from './fault-tools';

/**
 * Scenarios 13, 14 and 16: Redis crashes, loses its data, or stalls. The database is the record of
 * what was promised and Redis only delivers it, so whatever Redis forgets, the reconciler puts back:
 * every accepted job ends once, with its image.
 */

jest.setTimeout(600_000);

const FILE = 'redis';
const LOCK_MS = Number(FAST_SUPERVISOR_ENV.QUEUE_LOCK_DURATION_MS);
const RECONCILE_MS = Number(FAST_SUPERVISOR_ENV.RECONCILE_INTERVAL_MS);

let stack: FaultStack;
let sup: ManagedProcess;

reportMeasurements(FILE);

beforeAll(async () => {
  stack = await startFaultStack();
  sup = await startSupervisor(stack, 'host-a');
}, 300_000);

afterAll(async () => {
  await stack?.stop();
});

/** Every id finished (whatever its status), then what was lost. */
async function settle(ids: string[]) {
  for (const id of ids) await finished(stack, id, 300_000);
  return lostJobs(lossLook(stack), ids);
}

it('13. Redis killed (SIGKILL) mid-run with AOF, then restarted: nothing lost, each job recorded once', async () => {
  await recordScenario(FILE, '13. Redis SIGKILLed mid-run (AOF everysec), restarted 3 s later', async (row) => {
    const ids = [await create(stack, { ...LONG, prompt: 'redis sigkill long' })];
    for (let i = 0; i < 6; i++) ids.push(await create(stack, { ...TINY, prompt: `redis sigkill ${i}`, seed: i }));
    await midRun(stack, ids[0]);
    const noticed = nextLine(sup, /Redis unreachable/, 30_000);
    let refused = 0;
    const { stoppedAt, startedAt } = await restartRedis(stack, 3000, async () => {
      refused = (await api(stack, 'POST', '/v1/generations', { ...TINY, prompt: 'while redis is dead' })).status;
    }, { signal: 'SIGKILL' });
    const { at } = await noticed;
    expect(refused).toBe(503);
    const lost = await settle(ids);
    const doneAt = Date.now();
    countLoss(row, lost);
    for (const id of ids) expect((await stack.db.generation.findUniqueOrThrow({ where: { id } })).status).toBe('succeeded');
    // One line per outage, not one per retry.
    expect(sup.output.filter((l) => /Redis unreachable/.test(l)).length).toBeLessThanOrEqual(2);
    Object.assign(row, {
      outcome: `all ${ids.length} accepted jobs succeeded once each (a long one mid-run at the kill); creates answered 503 while Redis was down; the supervisor logged the outage once and resumed by itself`,
      detectionMs: at - stoppedAt,
      recoveryMs: doneAt - startedAt,
    });
  });
});

it('14. Redis data lost while the service is down: the reconciler puts every accepted job back; runs and batches finish', async () => {
  await recordScenario(FILE, '14. Redis data lost while the service was down (accepted jobs, a sandbox run, a batch)', async (row) => {
    // The supervisor away, so the jobs stay queued.
    await stopProcess(sup);
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await create(stack, { ...TINY, prompt: `redis data loss ${i}`, seed: i }));
    const run = await api(stack, 'POST', '/v1/sandbox-runs', { prompt: 'data loss sandbox', seed: 3, steps: 1, width: 64, height: 64, engines: ['flux1_dev', 'sd3_medium'] });
    expect(run.status).toBe(202);
    const batch = await api(stack, 'POST', '/v1/batches', { prompts: ['data loss batch a', 'data loss batch b'], engines: ['flux1_dev'], seeds: [1], steps: 1, width: 64, height: 64 });
    expect(batch.status).toBe(202);
    const members = await stack.db.generation.findMany({ where: { OR: [{ sandboxRunId: run.json.id }, { batchId: batch.json.id }] }, select: { id: true } });
    expect(members).toHaveLength(4);
    ids.push(...members.map((m) => m.id));
    expect(await stack.queue.getJob(ids[0])).toBeDefined();

    // The service stops, and Redis comes back empty (a replaced instance, a lost volume).
    await stopProcess(stack.gateway);
    await restartRedis(stack, 500, async () => undefined, { wipe: true });
    for (const id of ids) expect(await stack.queue.getJob(id)).toBeUndefined();
    const restartedAt = Date.now();
    await restartGateway(stack);
    sup = await startSupervisor(stack, 'host-a');
    const servingAt = Date.now();
    // Bootstrapped right after its worker is ready: the line may already be there.
    await sup.waitFor(/reconciled: .* put back on the queue/, 60_000);
    const at = Date.now();
    const lost = await settle(ids);
    const doneAt = Date.now();
    countLoss(row, lost);
    await poll('the sandbox run and the batch completed', async () => {
      const [r, b] = await Promise.all([api(stack, 'GET', `/v1/sandbox-runs/${run.json.id}`), api(stack, 'GET', `/v1/batches/${batch.json.id}`)]);
      return r.json.status === 'completed' && b.json.status === 'completed';
    }, 60_000, 200);

    // A run whose members all ended but whose own record missed it (a crash between the two writes).
    await stack.db.sandboxRun.update({ where: { id: run.json.id }, data: { status: 'running', finishedAt: null } });
    const reopenedAt = Date.now();
    await poll('the reconciler to finish the run', async () => (await api(stack, 'GET', `/v1/sandbox-runs/${run.json.id}`)).json.status === 'completed', RECONCILE_MS * 4, 100);
    const groupMs = Date.now() - reopenedAt;
    Object.assign(row, {
      outcome:
        `all ${ids.length} accepted generations (6 single, 2 of a sandbox run, 2 of a batch) were put back on the queue by the reconciler at supervisor start and succeeded once each; ` +
        `the run and the batch completed; a run left open after its members ended was finished by the next reconcile pass (${(groupMs / 1000).toFixed(1)} s). ` +
        `Detection and recovery from the restarted supervisor's first ready worker (the service's cold start took ${((servingAt - restartedAt) / 1000).toFixed(0)} s)`,
      detectionMs: at - servingAt,
      recoveryMs: doneAt - servingAt,
    });
  });
});

it('16. Redis stalled (SIGSTOP) longer than the job lock: readiness says 503 promptly throughout; the job ends once', async () => {
  await recordScenario(FILE, `16. Redis stalled (SIGSTOP) for 10 s mid-job, longer than the ${LOCK_MS} ms lock`, async (row) => {
    const id = await create(stack, { ...MEDIUM, steps: 100, prompt: 'redis stalled mid-job' });
    await midRun(stack, id);
    const t0 = Date.now();
    process.kill(stack.redis.child.pid!, 'SIGSTOP');
    const answers: Array<{ status: number; ms: number; body: { status?: string; checks?: Record<string, boolean> } }> = [];
    try {
      while (Date.now() - t0 < 10_000) {
        const asked = Date.now();
        const res = await api(stack, 'GET', '/health/ready');
        answers.push({ status: res.status, ms: Date.now() - asked, body: res.json });
        await sleep(250);
      }
    } finally {
      process.kill(stack.redis.child.pid!, 'SIGCONT');
    }
    const resumedAt = Date.now();
    // Every answer during the stall came within the check timeout and a margin, and said not_ready naming Redis.
    expect(answers.length).toBeGreaterThanOrEqual(5);
    for (const a of answers) {
      expect(a.ms).toBeLessThan(2500);
      expect(a.status).toBe(503);
      expect(a.body).toMatchObject({ status: 'not_ready', checks: { redis: false } });
    }
    await poll('readiness back', async () => (await api(stack, 'GET', '/health/ready')).status === 200, 60_000, 200);
    const lost = await settle([id]);
    const doneAt = Date.now();
    countLoss(row, lost);
    const g = await stack.db.generation.findUniqueOrThrow({ where: { id }, include: { images: true } });
    expect(g.status).toBe('succeeded');
    expect(g.images).toHaveLength(1);
    Object.assign(row, {
      outcome: `\`/health/ready\` answered 503 \`not_ready\` (redis: false) ${answers.length} times during the stall, slowest in ${Math.max(...answers.map((a) => a.ms))} ms; the job ended once, with its image (one record, one file)`,
      detectionMs: answers[0].ms,
      recoveryMs: doneAt - resumedAt,
    });
  });
});
