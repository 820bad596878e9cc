import { readFileSync } from 'node:fs';
import { api } from '../support/stack';
import { createKey } from '../support/keys';
import {
  create,
  ENGINE,
  type FaultStack,
  finished,
  isAlive,
  MEDIUM,
  midRun,
  nextLine,
  poll,
  records,
  startFaultStack,
  startSupervisor,
  TINY,
  waitForRestartedWorker,
  workerPid,
} from './fault-tools';
import type { ManagedProcess } from '../support/stack';

/**
 * A device group through the real stack: a supervisor with WORKER_DEVICES=cpu+cpu runs one worker of
 * two processes (rank 0, which it started, and the follower rank 0 started), FLUX.1's transformer
 * split across them by context parallelism over gloo. It is one worker for routing and for every
 * view, and a kill -9 of either process restarts the whole group with its job retried.
 */

/** Long enough that the kill lands mid-job; FLUX.1's 16x16 tokens split evenly across two ranks. */

jest.setTimeout(300_000);

let stack: FaultStack;
let sup: ManagedProcess;

beforeAll(async () => {
  stack = await startFaultStack();
  sup = await startSupervisor(stack, 'host-group', { WORKER_DEVICES: 'cpu+cpu' });
}, 300_000);

afterAll(async () => {
  await stack?.stop();
});

/** The processes a worker process started (a group's followers). */
function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

describe('a device group (WORKER_DEVICES=cpu+cpu)', () => {
  it('is one worker: in /health/ready, /v1/engines and the dashboard', async () => {
    const health = await api(stack, 'GET', '/health/ready');
    expect(health.status).toBe(200);
    expect(health.json.workers).toEqual([expect.objectContaining({ id: 'host-group/cpu+cpu', state: expect.stringMatching(/ready|busy/) })]);
    const engines = await api(stack, 'GET', '/v1/engines');
    for (const engine of engines.json.engines) expect(engine.workers).toEqual(['host-group/cpu+cpu']);
    const admin = await createKey(stack, 'ops', { role: 'admin' });
    const workers = await api(stack, 'GET', '/admin/api/workers', undefined, admin.auth);
    expect(workers.json).toEqual([expect.objectContaining({ id: 'host-group/cpu+cpu', device: 'cpu+cpu', restarts: 0 })]);
    // Two processes behind it: rank 0, the supervisor's child, and the follower it started.
    const leader = workerPid(sup)!;
    expect(children(leader)).toHaveLength(1);
  });

  it('serves a generation', async () => {
    const id = await create(stack, { ...TINY, prompt: 'a lighthouse, two ranks' });
    const g = await finished(stack, id);
    expect(g.status).toBe('succeeded');
    expect(g.engine).toBe(ENGINE);
    expect((await records(stack, id)).files).toEqual([`${id}_0.png`]);
  });

  it('kill -9 of the follower mid-job: the group restarts, the job is retried and succeeds, no process is left over', async () => {
    const id = await create(stack, { ...MEDIUM, prompt: 'follower kill -9' });
    await midRun(stack, id);
    const leader = workerPid(sup)!;
    const [follower] = children(leader);
    expect(follower).toBeGreaterThan(0);
    // Rank 0 sees its follower die and exits with RANK_LOST (73) while it holds the job: retryable.
    const lost = nextLine(sup, new RegExp(`${id} attempt 1 failed: .*exited with code 73`), 60_000);
    process.kill(follower, 'SIGKILL');
    await lost;
    const restarted = await waitForRestartedWorker(sup, leader, 240_000);
    expect(isAlive(leader)).toBe(false);
    expect(isAlive(follower)).toBe(false);
    const g = await finished(stack, id, 240_000);
    expect(g.status).toBe('succeeded');
    const r = await records(stack, id);
    expect(r.rows).toHaveLength(1);
    expect(r.rows[0].attempts).toBe(2);
    expect(r.files).toEqual([`${id}_0.png`]);
    // The new group has its own follower, and still counts as one worker (restarted once).
    expect(children(restarted.pid)).toHaveLength(1);
    await poll('the dashboard to show the restart', async () => {
      const health = await api(stack, 'GET', '/health/ready');
      return health.json.workers.length === 1 && health.json.workers[0].restarts === 1;
    }, 30_000, 250);
  });
});
