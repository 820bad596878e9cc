import { JobName, QueueName, type ExpireGenerationsResult } from '@flexy/contracts';
import { createDatabaseClient, type DatabaseClient } from '@flexy/persistence';
import { ImageStore } from '@flexy/storage';
import { Queue, QueueEvents } from 'bullmq';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { api, startStack, type Stack } from '../support/stack';
import { pollJson } from '../support/poll';
import { createKeys, type TestKey } from '../support/keys';

jest.setTimeout(300_000);

const RETENTION_DAYS = 7;
const DAY_MS = 24 * 3600_000;
const SMALL = { steps: 1, width: 64, height: 64 };
const TERMINAL = ['succeeded', 'failed', 'cancelled'];

let stack: Stack;
let db: DatabaseClient;
let images: ImageStore;
let alice: TestKey;
let bob: TestKey;

beforeAll(async () => {
  stack = await startStack({ env: { AUTH_MODE: 'keys', RETENTION_DAYS: String(RETENTION_DAYS) } });
  ({ alice, bob } = await createKeys(stack, { alice: {}, bob: {} }));
  db = createDatabaseClient(stack.env.DATABASE_URL!);
  images = new ImageStore(join(stack.dataDir, 'images'));
});
afterAll(async () => {
  await db?.$disconnect();
  await stack?.stop();
});

/** Polls `path` as `who` until `done` holds for its JSON. */
const until = <T = any>(path: string, who: TestKey, done: (json: T) => boolean) => pollJson<T>(stack, path, who.auth, done);

interface Item {
  id: string;
  status: string;
  engine?: string;
  created_at: string;
}

/** Every page of a list, with the size of each page. */
async function pages(path: string, who: TestKey, query: string, limit: number): Promise<{ items: Item[]; sizes: number[] }> {
  const items: Item[] = [];
  const sizes: number[] = [];
  let cursor: string | null = null;
  do {
    const r: { status: number; json: { items: Item[]; next_cursor: string | null } } = await api(
      stack,
      'GET',
      `${path}?limit=${limit}${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      undefined,
      who.auth,
    );
    expect(r.status).toBe(200);
    items.push(...r.json.items);
    sizes.push(r.json.items.length);
    cursor = r.json.next_cursor;
    expect(sizes.length).toBeLessThan(200); // a cursor that never ends is a defect, not a long list
  } while (cursor);
  return { items, sizes };
}

/** Newest first; ties in time by id, descending: the order every list promises. */
function newestFirst(a: Item, b: Item): number {
  return Date.parse(b.created_at) - Date.parse(a.created_at) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/** Paging through `query` in pages of `limit` yields exactly `expected`, newest first, each once, every page full but the last. */
async function expectPaged(path: string, who: TestKey, query: string, limit: number, expected: Item[]) {
  const { items, sizes } = await pages(path, who, query, limit);
  const want = [...expected].sort(newestFirst).map((i) => i.id);
  expect(items.map((i) => i.id)).toEqual(want);
  expect(new Set(items.map((i) => i.id)).size).toBe(items.length);
  expect(sizes.slice(0, -1).every((n) => n === limit)).toBe(true);
}

async function imagePaths(id: string): Promise<string[]> {
  return (await db.generationImage.findMany({ where: { generationId: id }, select: { path: true } })).map((i) => join(stack.dataDir, 'images', i.path));
}

describe("an owner's lists", () => {
  /** Everything Alice made, as GET shows it once finished. */
  let mine: Item[] = [];
  let theirs: string[] = [];
  let runs: Item[] = [];
  let batches: Item[] = [];
  let between = '';

  beforeAll(async () => {
    // A batch: twenty records written in one statement, so they share one created_at and only the id orders them.
    const batch = await api(stack, 'POST', '/v1/batches', { prompts: ['list a', 'list b'], engines: ['flux1_dev', 'realvis_xl'], seeds: [1, 2, 3, 4, 5], ...SMALL }, alice.auth);
    expect(batch.status).toBe(202);
    await new Promise((r) => setTimeout(r, 20)); // created_at has millisecond resolution: the next records are strictly later
    between = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 20));
    // Concurrent singles: several land in one group-commit round (one created_at) too.
    const singles = await Promise.all(
      Array.from({ length: 6 }, (_, i) => api(stack, 'POST', '/v1/generations', { prompt: `single ${i}`, engine: i % 2 ? 'sd3_medium' : 'flux1_dev', seed: i, ...SMALL }, alice.auth)),
    );
    expect(singles.map((s) => s.status)).toEqual(Array(6).fill(202));
    const cancelled = await api(stack, 'POST', '/v1/generations', { prompt: 'cancel me', engine: 'flux1_dev', steps: 60, width: 256, height: 256 }, alice.auth);
    expect((await api(stack, 'POST', `/v1/generations/${cancelled.json.id}/cancel`, undefined, alice.auth)).status).toBe(202);

    const bobs = await api(stack, 'POST', '/v1/generations', { prompt: 'bob', engine: 'flux1_dev', ...SMALL }, bob.auth);
    const bobsRun = await api(stack, 'POST', '/v1/sandbox-runs', { prompt: 'bob run', ...SMALL, engines: ['realvis_xl'] }, bob.auth);
    const bobsBatch = await api(stack, 'POST', '/v1/batches', { prompts: ['bob batch'], engines: ['flux1_dev'], ...SMALL }, bob.auth);
    theirs = [bobs.json.id, bobsRun.json.id, bobsBatch.json.id];

    for (let i = 0; i < 3; i++) {
      const run = await api(stack, 'POST', '/v1/sandbox-runs', { prompt: `run ${i}`, seed: i, ...SMALL, engines: ['realvis_xl'] }, alice.auth);
      expect(run.status).toBe(202);
    }
    const small = await api(stack, 'POST', '/v1/batches', { prompts: ['small batch'], engines: ['realvis_xl'], ...SMALL }, alice.auth);
    const toCancel = await api(stack, 'POST', '/v1/batches', { prompts: ['cancelled batch'], engines: ['flux1_dev'], steps: 60, width: 256, height: 256 }, alice.auth);
    expect((await api(stack, 'POST', `/v1/batches/${toCancel.json.id}/cancel`, undefined, alice.auth)).status).toBe(202);

    // Wait for all of it to finish, then take the finished views as the truth to compare lists with.
    await until(`/v1/batches/${batch.json.id}`, alice, (b) => b.status === 'completed');
    await until(`/v1/batches/${small.json.id}`, alice, (b) => b.status === 'completed');
    const ids = [...(await api(stack, 'GET', `/v1/batches/${batch.json.id}`, undefined, alice.auth)).json.items.map((i: Item) => i.id), ...singles.map((s) => s.json.id), cancelled.json.id];
    mine = [];
    for (const id of ids) mine.push(await until<Item>(`/v1/generations/${id}`, alice, (g) => TERMINAL.includes(g.status)));
    runs = (await pages('/v1/sandbox-runs', alice, '', 100)).items;
    for (const run of runs) await until(`/v1/sandbox-runs/${run.id}`, alice, (r) => r.status === 'completed');
    runs = (await pages('/v1/sandbox-runs', alice, '', 100)).items;
    batches = (await pages('/v1/batches', alice, '', 100)).items;
    await until(`/v1/generations/${bobs.json.id}`, bob, (g) => TERMINAL.includes(g.status));
  });

  it('pages through every generation newest first, with no gap and no repeat, at any page size', async () => {
    // The singles, the cancelled one and the batch items; the sandbox runs' and batches' members are Alice's too.
    const all = (await pages('/v1/generations', alice, '', 100)).items;
    expect(all.map((i) => i.id)).toEqual(expect.arrayContaining(mine.map((i) => i.id)));
    expect(all.filter((i) => theirs.includes(i.id))).toEqual([]);
    expect(all.length).toBeGreaterThanOrEqual(27);
    // Twenty share one timestamp: pages of 3 and 7 cut through that tie.
    for (const limit of [1, 3, 7, 100]) await expectPaged('/v1/generations', alice, '', limit, all);
  });

  it('filters by status, engine and creation time, and pages the filtered list the same way', async () => {
    const all = (await pages('/v1/generations', alice, '', 100)).items;
    expect(all.filter((i) => i.status === 'cancelled').length).toBeGreaterThanOrEqual(2); // the single and the batch item
    for (const status of ['succeeded', 'cancelled', 'queued']) await expectPaged('/v1/generations', alice, `&status=${status}`, 4, all.filter((i) => i.status === status));
    for (const engine of ['realvis_xl', 'sd3_medium', 'flux2_dev_4bit']) await expectPaged('/v1/generations', alice, `&engine=${engine}`, 4, all.filter((i) => i.engine === engine));
    await expectPaged('/v1/generations', alice, '&status=succeeded&engine=flux1_dev', 3, all.filter((i) => i.status === 'succeeded' && i.engine === 'flux1_dev'));
    const cut = Date.parse(between);
    const after = all.filter((i) => Date.parse(i.created_at) > cut);
    const before = all.filter((i) => Date.parse(i.created_at) < cut);
    expect(after.length).toBeGreaterThan(0);
    expect(before.length).toBeGreaterThanOrEqual(20);
    await expectPaged('/v1/generations', alice, `&created_after=${between}`, 5, after);
    await expectPaged('/v1/generations', alice, `&created_before=${between}`, 5, before);
    await expectPaged('/v1/generations', alice, `&created_before=${between}&engine=realvis_xl&status=succeeded`, 3, before.filter((i) => i.engine === 'realvis_xl' && i.status === 'succeeded'));
  });

  it('lists sandbox runs and batches the same way, and only the owner’s', async () => {
    expect(runs).toHaveLength(3);
    expect(batches).toHaveLength(3);
    for (const [path, list] of [['/v1/sandbox-runs', runs], ['/v1/batches', batches]] as const) {
      expect(list.filter((i) => theirs.includes(i.id))).toEqual([]);
      await expectPaged(path, alice, '', 1, list);
      await expectPaged(path, alice, '&status=completed', 1, list.filter((i) => i.status === 'completed'));
      const cut = Date.parse(between);
      await expectPaged(path, alice, `&created_after=${between}`, 2, list.filter((i) => Date.parse(i.created_at) > cut));
      await expectPaged(path, alice, `&created_before=${between}`, 2, list.filter((i) => Date.parse(i.created_at) < cut));
    }
    // The first batch came before the cut, every run after it.
    expect((await pages('/v1/batches', alice, `&created_before=${between}`, 2)).items).toHaveLength(1);
    expect((await pages('/v1/sandbox-runs', alice, `&created_before=${between}`, 2)).items).toEqual([]);
    expect(batches.map((b) => b.status).sort()).toEqual(['cancelled', 'completed', 'completed']);
    await expectPaged('/v1/batches', alice, '&status=cancelled', 1, batches.filter((i) => i.status === 'cancelled'));
  });

  it('refuses a cursor that is not one, naming the field', async () => {
    for (const path of ['/v1/generations', '/v1/sandbox-runs', '/v1/batches']) {
      // A string, as documented, that is not one of the list's cursors: 422.
      const r = await api(stack, 'GET', `${path}?cursor=not-a-cursor`, undefined, alice.auth);
      expect(r.status).toBe(422);
      expect(r.json.fields).toEqual([{ field: 'cursor', message: expect.any(String) }]);
    }
    const r = await api(stack, 'GET', '/v1/generations?status=done&limit=500', undefined, alice.auth);
    expect(r.status).toBe(400);
    expect(r.json.fields.map((f: { field: string }) => f.field).sort()).toEqual(['limit', 'status']);
  });
});

describe('deletion', () => {
  it('deletes a finished generation with its images and references; a repeat is harmless; others get 404', async () => {
    const ref = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#336699' } }).png().toBuffer();
    const created = await api(
      stack,
      'POST',
      '/v1/generations',
      { prompt: 'delete me', engine: 'flux2_dev_4bit', seed: 9, ...SMALL, references: [`data:image/png;base64,${ref.toString('base64')}`] },
      { ...alice.auth, prefer: 'wait=120' },
    );
    expect(created.json.status).toBe('succeeded');
    const id = created.json.id;
    const files = [...(await imagePaths(id)), join(stack.dataDir, 'images', images.relativePath(`${id}_ref`, 0, 'png'))];
    expect(files.map(existsSync)).toEqual([true, true]);

    expect((await api(stack, 'DELETE', `/v1/generations/${id}`, undefined, bob.auth)).status).toBe(404);
    expect(files.map(existsSync)).toEqual([true, true]);

    expect((await api(stack, 'DELETE', `/v1/generations/${id}`, undefined, alice.auth)).status).toBe(204);
    expect(files.map(existsSync)).toEqual([false, false]);
    expect((await api(stack, 'GET', `/v1/generations/${id}`, undefined, alice.auth)).status).toBe(404);
    expect((await api(stack, 'GET', `/v1/generations/${id}/image`, undefined, alice.auth)).status).toBe(404);
    expect((await pages('/v1/generations', alice, '', 100)).items.map((i) => i.id)).not.toContain(id);
    // Hidden, not gone: the record waits for retention.
    expect((await db.generation.findUnique({ where: { id } }))?.deletedAt).toBeInstanceOf(Date);

    expect((await api(stack, 'DELETE', `/v1/generations/${id}`, undefined, alice.auth)).status).toBe(204);
    expect((await api(stack, 'DELETE', `/v1/generations/${id}`, undefined, bob.auth)).status).toBe(404);
  });

  it('an unfinished generation is cancelled and deleted at once: 204 while queued, 202 while its worker stops', async () => {
    const created = await api(stack, 'POST', '/v1/generations', { prompt: 'unfinished', engine: 'flux1_dev', steps: 60, width: 256, height: 256 }, alice.auth);
    const id: string = created.json.id;
    const del = await api(stack, 'DELETE', `/v1/generations/${id}`, undefined, alice.auth);
    expect([202, 204]).toContain(del.status);
    if (del.status === 202) expect(del.json).toEqual({ id, status: 'cancelling' });
    // Gone from every read at once; the record settles as cancelled, hidden, for retention.
    expect((await api(stack, 'GET', `/v1/generations/${id}`, undefined, alice.auth)).status).toBe(404);
    expect((await pages('/v1/generations', alice, '', 100)).items.map((i) => i.id)).not.toContain(id);
    const deadline = Date.now() + 120_000;
    let record = await db.generation.findUnique({ where: { id } });
    while (record?.status !== 'cancelled' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      record = await db.generation.findUnique({ where: { id } });
    }
    expect(record).toMatchObject({ status: 'cancelled', deletedAt: expect.any(Date) });
    expect((await api(stack, 'DELETE', `/v1/generations/${id}`, undefined, alice.auth)).status).toBe(204);
  });
});

describe('retention (RETENTION_DAYS=7), driven through the supervisor’s maintenance job', () => {
  let maintenance: Queue;
  let maintenanceEvents: QueueEvents;
  let generationQueue: Queue;

  beforeAll(async () => {
    const connection = { host: '127.0.0.1', port: stack.redisPort };
    maintenance = new Queue(QueueName.Maintenance, { connection });
    maintenanceEvents = new QueueEvents(QueueName.Maintenance, { connection });
    generationQueue = new Queue(QueueName.Generation, { connection });
    await maintenanceEvents.waitUntilReady();
  });
  afterAll(async () => {
    await generationQueue?.resume();
    await Promise.all([maintenance?.close(), maintenanceEvents?.close(), generationQueue?.close()]);
  });

  /** One run of the job the supervisor schedules every ten minutes, now. */
  async function runRetention(): Promise<ExpireGenerationsResult> {
    const job = await maintenance.add(JobName.ExpireGenerations, {});
    return (await job.waitUntilFinished(maintenanceEvents, 120_000)) as ExpireGenerationsResult;
  }

  const longAgo = () => new Date(Date.now() - (RETENTION_DAYS + 1) * DAY_MS);

  it('removes old finished records and their files in bounded batches; keeps recent and unfinished ones; empties and removes old runs and batches', async () => {
    // Old work through the API, then aged in the database: one generation, a sandbox run, a batch, and a deleted one.
    const old = await api(stack, 'POST', '/v1/generations', { prompt: 'old', engine: 'flux1_dev', ...SMALL }, { ...alice.auth, prefer: 'wait=120' });
    const oldDeleted = await api(stack, 'POST', '/v1/generations', { prompt: 'old deleted', engine: 'flux1_dev', ...SMALL }, { ...alice.auth, prefer: 'wait=120' });
    const oldRun = await api(stack, 'POST', '/v1/sandbox-runs', { prompt: 'old run', ...SMALL, engines: ['flux1_dev', 'realvis_xl'] }, alice.auth);
    const oldBatch = await api(stack, 'POST', '/v1/batches', { prompts: ['old batch'], engines: ['flux1_dev', 'sd3_medium'], ...SMALL }, bob.auth);
    const recent = await api(stack, 'POST', '/v1/generations', { prompt: 'recent', engine: 'flux1_dev', ...SMALL }, { ...alice.auth, prefer: 'wait=120' });
    expect([old.json.status, oldDeleted.json.status, recent.json.status]).toEqual(['succeeded', 'succeeded', 'succeeded']);
    await until(`/v1/sandbox-runs/${oldRun.json.id}`, alice, (r) => r.status === 'completed');
    await until(`/v1/batches/${oldBatch.json.id}`, bob, (b) => b.status === 'completed');
    expect((await api(stack, 'DELETE', `/v1/generations/${oldDeleted.json.id}`, undefined, alice.auth)).status).toBe(204);

    // An old generation that has not finished: the queue is paused, so it stays queued.
    await generationQueue.pause();
    const oldWaiting = await api(stack, 'POST', '/v1/generations', { prompt: 'old but waiting', engine: 'flux1_dev', ...SMALL }, alice.auth);
    expect(oldWaiting.status).toBe(202);

    const runMembers = (await db.generation.findMany({ where: { sandboxRunId: oldRun.json.id }, select: { id: true } })).map((g) => g.id);
    const batchMembers = (await db.generation.findMany({ where: { batchId: oldBatch.json.id }, select: { id: true } })).map((g) => g.id);
    const oldIds = [old.json.id, oldDeleted.json.id, ...runMembers, ...batchMembers];
    expect(oldIds).toHaveLength(6);
    const oldFiles = (await Promise.all(oldIds.map(imagePaths))).flat();
    expect(oldFiles).toHaveLength(6);
    // The deleted one's file went with the deletion; its record is still there, hidden.
    expect(oldFiles.filter(existsSync)).toHaveLength(5);

    // More old records than one batch holds (the handler removes 500 per statement), each with an image file.
    const BULK = 1200;
    const BULK_PREFIX = `gen_${'0'.repeat(20)}`;
    const bulkIds = Array.from({ length: BULK }, (_, i) => `${BULK_PREFIX}${String(i).padStart(12, '0')}`);
    const stored = await Promise.all(bulkIds.map((id) => images.put(id, 0, 'png', Buffer.from('not really a png'))));
    const createdAt = longAgo();
    await db.generation.createMany({
      data: bulkIds.map((id) => ({ id, status: 'succeeded' as const, engine: 'flux1_dev', prompt: 'bulk', seed: 1n, steps: 1, guidance: 1, width: 64, height: 64, numImages: 1, apiKeyId: bob.id, createdAt, finishedAt: createdAt })),
    });
    await db.generationImage.createMany({ data: bulkIds.map((id, i) => ({ generationId: id, index: 0, path: stored[i].path, format: 'png', width: 64, height: 64, bytes: stored[i].bytes, sha256: '0'.repeat(64) })) });

    await db.generation.updateMany({ where: { id: { in: [...oldIds, oldWaiting.json.id] } }, data: { createdAt: longAgo() } });
    await db.sandboxRun.update({ where: { id: oldRun.json.id }, data: { createdAt: longAgo() } });
    await db.batch.update({ where: { id: oldBatch.json.id }, data: { createdAt: longAgo() } });
    const recentFiles = await imagePaths(recent.json.id);
    const everythingBefore = await db.generation.count();

    const result = await runRetention();
    expect(result).toMatchObject({ expired: BULK + oldIds.length, sandboxRuns: 1, batches: 1 });

    const bulk = { startsWith: BULK_PREFIX };
    expect(await db.generation.count({ where: { OR: [{ id: { in: oldIds } }, { id: bulk }] } })).toBe(0);
    expect(await db.generationImage.count({ where: { OR: [{ generationId: { in: oldIds } }, { generationId: bulk }] } })).toBe(0);
    expect(oldFiles.filter(existsSync)).toEqual([]);
    expect(stored.filter((s) => existsSync(join(stack.dataDir, 'images', s.path)))).toEqual([]);
    expect(await db.generation.count()).toBe(everythingBefore - BULK - oldIds.length);
    expect(await db.sandboxRun.findUnique({ where: { id: oldRun.json.id } })).toBeNull();
    expect(await db.batch.findUnique({ where: { id: oldBatch.json.id } })).toBeNull();
    expect((await api(stack, 'GET', `/v1/sandbox-runs/${oldRun.json.id}`, undefined, alice.auth)).status).toBe(404);
    expect((await api(stack, 'GET', `/v1/batches/${oldBatch.json.id}`, undefined, bob.auth)).status).toBe(404);
    expect((await api(stack, 'GET', `/v1/generations/${old.json.id}`, undefined, alice.auth)).status).toBe(404);

    // Kept: the recent one with its image, and the old one that has not finished.
    expect((await api(stack, 'GET', `/v1/generations/${recent.json.id}/image`, undefined, alice.auth)).status).toBe(200);
    expect(recentFiles.every(existsSync)).toBe(true);
    expect((await api(stack, 'GET', `/v1/generations/${oldWaiting.json.id}`, undefined, alice.auth)).json.status).toBe('queued');

    // Once it runs and finishes, the next run removes it; a run with nothing old removes nothing.
    await generationQueue.resume();
    await until(`/v1/generations/${oldWaiting.json.id}`, alice, (g) => g.status === 'succeeded');
    expect(await runRetention()).toMatchObject({ expired: 1, sandboxRuns: 0, batches: 0 });
    expect(await runRetention()).toMatchObject({ expired: 0, sandboxRuns: 0, batches: 0 });
    expect((await api(stack, 'GET', `/v1/generations/${recent.json.id}`, undefined, alice.auth)).status).toBe(200);
  });
});
