import { QueueName } from '@flexy/contracts';
import { createDatabaseClient, type DatabaseClient } from '@flexy/persistence';
import { Queue } from 'bullmq';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { npmServiceProcesses, startNpmService } from '../support/npm-service';
import { freePort, type ManagedProcess } from '../support/stack';
import {
  countLoss,
  linesMatching,
  LONG,
  lostJobs,
  nextLine,
  poll,
  recordScenario,
  reportMeasurements,
  waitForLines,
  type Measurement,
} from './fault-tools';

/**
 * Scenarios 11 and 12: the service as an operator runs it (`npm start`) and stops it — a signal to
 * the whole process group (Ctrl-C, `kill -- -PGID`, a container stop) and a SIGTERM to npm's pid
 * alone — while a job runs. Stopping is not cancelling: the job goes back to the queue, the service
 * is gone within the grace period plus a few seconds, and after a restart on the same data the job
 * runs once and succeeds.
 */

jest.setTimeout(600_000);

const FILE = 'stop';
const GRACE_MS = 3000;
/**
 * What the whole stop may take beyond the grace period: the interrupt between steps and each process's
 * exit, one after another. About 3.5 s on a quiet 2-core machine (the row records it); the bound is
 * wide because a loaded machine slows every exit, and what makes a stop orderly is checked apart: no
 * process killed for outstaying its limit, no worker restarted.
 */
const STOP_MARGIN_MS = 20_000;

const dataDir = mkdtempSync(join(tmpdir(), 'flexy-stop-'));
let port: number;
let db: DatabaseClient;

/** `npm start` in a process group of its own (as in a terminal), on this file's data folder. */
async function startService(): Promise<ManagedProcess> {
  const service = startNpmService(dataDir, port, { SUPERVISOR_GRACE_MS: String(GRACE_MS), OMP_NUM_THREADS: '1', DEMO_SNAPSHOTS: 'off' });
  await service.waitFor(/ready: http:\/\/127\.0\.0\.1/, 300_000);
  await poll('a serving worker', async () => (await fetch(`http://127.0.0.1:${port}/health/ready`)).status === 200, 300_000, 200);
  return service;
}

async function createLong(prompt: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/generations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...LONG, prompt, seed: 5 }),
  });
  expect(res.status).toBe(202);
  return ((await res.json()) as { id: string }).id;
}

async function status(id: string): Promise<{ status: string; error: unknown }> {
  return (await (await fetch(`http://127.0.0.1:${port}/v1/generations/${id}`)).json()) as { status: string; error: unknown };
}

/** Stops the service with `signal` sent by `how`, and returns when every one of its processes is gone. */
async function stopService(service: ManagedProcess, how: 'group' | 'npm', id: string) {
  const handedBack = nextLine(service, new RegExp(`${id} put back in the queue`), GRACE_MS + 20_000);
  const t0 = Date.now();
  if (how === 'group') process.kill(-service.child.pid!, 'SIGINT');
  else process.kill(service.child.pid!, 'SIGTERM');
  const { at } = await handedBack;
  await poll('every process of the service to exit', async () => npmServiceProcesses(dataDir).length === 0, GRACE_MS + 60_000, 100);
  const goneMs = Date.now() - t0;
  await service.exited(); // and all it printed read
  return { backMs: at - t0, goneMs };
}

reportMeasurements(FILE);

beforeAll(async () => {
  port = await freePort();
  db = createDatabaseClient(`file:${join(dataDir, 'flexyface.db')}`);
});

afterAll(async () => {
  await db?.$disconnect().catch(() => undefined);
  for (const pid of npmServiceProcesses(dataDir)) spawn('kill', ['-9', String(pid)]);
  rmSync(dataDir, { recursive: true, force: true });
});

/** After a stop: the job is queued in the database, nobody recorded it cancelled, no image exists yet. */
async function expectPutBack(id: string) {
  const row = await db.generation.findUniqueOrThrow({ where: { id } });
  expect(row.status).toBe('queued');
}

/** Restarts the service on the same data; the job must run once and succeed, and nothing be lost. */
async function restartAndFinish(service: ManagedProcess, id: string) {
  const restarted = await startService();
  await poll(`${id} to finish after the restart`, async () => !['queued', 'running'].includes((await status(id)).status), 300_000, 200);
  const finishedAt = Date.now();
  expect((await status(id)).status).toBe('succeeded');
  await waitForLines(restarted, new RegExp(`job=${id} succeeded`), 1);
  expect([...service.output, ...restarted.output].filter((l) => new RegExp(`job=${id} succeeded`).test(l))).toHaveLength(1);
  expect(linesMatching(service, new RegExp(`job=${id} (cancelled|interrupted)`)).filter((l) => !/interrupted/.test(l))).toEqual([]);
  const queue = new Queue(QueueName.Generation, { connection: { url: redisUrlOf(restarted), maxRetriesPerRequest: null } });
  queue.on('error', () => undefined);
  try {
    const lost = await lostJobs({ db, queue, imagesDir: join(dataDir, 'images') }, [id]);
    return { restarted, finishedAt, lost };
  } finally {
    await queue.close();
  }
}

function redisUrlOf(service: ManagedProcess): string {
  const line = service.output.find((l) => /Running mode=standalone, port=\d+/.test(l))!;
  return `redis://127.0.0.1:${/port=(\d+)/.exec(line)![1]}`;
}

let service: ManagedProcess;

/**
 * Starts a long job, stops the service mid-run (`how`), checks the stopped service's log (`checkStop`),
 * then starts the service again on the same data: the job must have been put back and run once.
 */
async function stopMidJobThenRestart(row: Measurement, prompt: string, how: 'group' | 'npm', checkStop: (stopped: ManagedProcess) => void) {
  const id = await createLong(prompt);
  await poll(`${id} running`, async () => (await status(id)).status === 'running', 120_000, 100);
  const t0 = Date.now();
  const { backMs, goneMs } = await stopService(service, how, id);
  expect(goneMs).toBeLessThan(GRACE_MS + STOP_MARGIN_MS);
  expect(linesMatching(service, /did not stop within \d+ ms; killing it/)).toEqual([]);
  checkStop(service);
  await expectPutBack(id);
  const { restarted, finishedAt, lost } = await restartAndFinish(service, id);
  service = restarted;
  countLoss(row, lost);
  return { goneMs, detectionMs: backMs, recoveryMs: finishedAt - t0 };
}

it('11. a group stop (Ctrl-C) mid-job puts the job back, ends every process within the grace period plus a few seconds, and the job runs once after a restart', async () => {
  await recordScenario(FILE, '11. group stop (SIGINT to the process group) mid-job, then restart', async (row) => {
    service = await startService();
    const { goneMs, ...times } = await stopMidJobThenRestart(row, 'group stop mid-job', 'group', (stopped) => {
      expect(linesMatching(stopped, /restarting .* in \d+ ms/)).toEqual([]); // no worker restart once stopping
      expect(linesMatching(stopped, /Redis unreachable/).length).toBeLessThanOrEqual(2); // one line per process at most
    });
    Object.assign(row, {
      outcome: `job put back (\`queued\`, never \`cancelled\`) after the ${GRACE_MS} ms grace; no worker restart; every process gone ${(goneMs / 1000).toFixed(1)} s after the signal; after \`npm start\` again it ran once and succeeded`,
      ...times,
    });
  });
});

it('12. SIGTERM to npm alone stops the whole service the same way', async () => {
  await recordScenario(FILE, '12. SIGTERM to the `npm start` process alone mid-job, then restart', async (row) => {
    const { goneMs, ...times } = await stopMidJobThenRestart(row, 'npm pid stop mid-job', 'npm', (stopped) => {
      expect(linesMatching(stopped, /npm stopped; stopping the service/)).toHaveLength(1);
    });
    Object.assign(row, {
      outcome: `npm exited; \`scripts/start.mjs\` saw its parent go and stopped everything (no orphan) ${(goneMs / 1000).toFixed(1)} s after the signal; job put back and, after a restart, run once`,
      ...times,
    });
    process.kill(-service.child.pid!, 'SIGINT');
    await poll('the last service to exit', async () => npmServiceProcesses(dataDir).length === 0, GRACE_MS + 60_000, 100);
  });
});
