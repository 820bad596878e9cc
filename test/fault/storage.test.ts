import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { stopProcess, type ManagedProcess } from '../support/stack';
import {
  create,
  type FaultStack,
  finished,
  lossLook,
  lostJobs,
  makeReadOnly,
  MEDIUM,
  midRun,
  nextLine,
  recordScenario,
  reportMeasurements,
  sleep,
  startFaultStack,
  startSupervisor,
  TINY,
  waitForLines,
} from './fault-tools';

/**
 * Scenario 18: the image store goes read-only for 30 s. A storage error is an infrastructure error:
 * the finished image is kept in memory and storing it is retried with a backoff (IMAGE_STORE_RETRY_MS),
 * never by generating it again; past the window the job fails as `storage_unavailable`.
 */

jest.setTimeout(600_000);

const FILE = 'storage';
const OUTAGE_MS = 30_000;
const SHORT_WINDOW_MS = 4000;

let stack: FaultStack;
let sup: ManagedProcess;
let imagesDir: string;

reportMeasurements(FILE);

beforeAll(async () => {
  stack = await startFaultStack();
  imagesDir = join(stack.dataDir, 'images');
  mkdirSync(imagesDir, { recursive: true });
  sup = await startSupervisor(stack, 'host-a', { IMAGE_STORE_RETRY_MS: '120000' });
}, 300_000);

afterAll(async () => {
  await stack?.stop();
});

/** How many times the worker ran each job to the end (a storage retry must not run it again). */
const runs = async (p: ManagedProcess, id: string) => (await waitForLines(p, new RegExp(`job=${id} succeeded`), 1)).length;

it('18. the image store read-only for 30 s: images kept and stored once it is back, none generated twice; past the window, storage_unavailable', async () => {
  await recordScenario(FILE, '18. image store read-only for 30 s (then, with a 4 s window, read-only for longer)', async (row) => {
    const ids = [await create(stack, { ...MEDIUM, prompt: 'storage outage mid-run' })];
    await midRun(stack, ids[0]);
    const noticed = nextLine(sup, /storing image \d+ failed/, 60_000);
    const undo = makeReadOnly(imagesDir);
    const t0 = Date.now();
    let restoredAt = 0;
    try {
      for (let i = 0; i < 4; i++) ids.push(await create(stack, { ...TINY, prompt: `storage outage ${i}`, seed: i }));
      await sleep(OUTAGE_MS - (Date.now() - t0));
    } finally {
      undo();
      restoredAt = Date.now();
    }
    const { at } = await noticed;
    for (const id of ids) expect((await finished(stack, id, 180_000)).status).toBe('succeeded');
    const doneAt = Date.now();
    for (const id of ids) expect(await runs(sup, id)).toBe(1);
    const lost = await lostJobs(lossLook(stack), ids);
    expect(lost).toEqual([]);

    // A supervisor that may wait only 4 s: the job fails as storage_unavailable, having run once.
    await stopProcess(sup);
    const short = await startSupervisor(stack, 'host-b', { IMAGE_STORE_RETRY_MS: String(SHORT_WINDOW_MS) });
    const undoAgain = makeReadOnly(imagesDir);
    let refused: string;
    try {
      refused = await create(stack, { ...TINY, prompt: 'storage outage past the window' });
      const g = await finished(stack, refused, 120_000);
      expect(g.status).toBe('failed');
      expect(g.error.code).toBe('storage_unavailable');
      expect(g.error.message).toMatch(/the image store failed for 4 s/);
    } finally {
      undoAgain();
    }
    expect(await runs(short, refused)).toBe(1);
    const all = await lostJobs(lossLook(stack), [...ids, refused], { expectedFailures: new Map([[refused, 'storage_unavailable']]) });
    row.jobsLost = all.length;
    expect(all).toEqual([]);
    Object.assign(row, {
      outcome:
        `all ${ids.length} jobs (one mid-run at the outage) were generated once each, kept in memory and stored once the store was writable again; ` +
        `with a ${SHORT_WINDOW_MS / 1000} s IMAGE_STORE_RETRY_MS, a job failed \`storage_unavailable\` after its window, also generated once`,
      detectionMs: at - t0,
      recoveryMs: doneAt - restoredAt,
    });
  });
});
