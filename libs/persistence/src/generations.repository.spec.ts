import { spawn } from 'node:child_process';
import { dbCore } from './database-tools';
import { InvalidCursorError, ownerOf, everyOwner } from './owner-scope';
import type { GenerationParams } from '@flexy/engines';
import { GenerationsRepository, type CreateGenerationInput, type GenerationSuccess } from './generations.repository';
import { applyMigrations } from './migrations';
import { PrismaService } from './prisma.service';
import { postgresUnavailableReason, startTestPostgres, tempDir, type TempDir, type TestPostgres } from './testing/databases';

jest.setTimeout(120_000);

let n = 0;
/** A new record's input; parameter overrides (seed, negative_prompt, …) go into its params. */
function request(overrides: Partial<Omit<CreateGenerationInput, 'params'>> & Partial<GenerationParams> = {}): CreateGenerationInput {
  const params: GenerationParams = { prompt: 'a lighthouse at dusk', negative_prompt: null, seed: 42, steps: 28, guidance: 4, width: 1024, height: 1024, num_images: 2 };
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(overrides)) {
    if (k in params) (params as unknown as Record<string, unknown>)[k] = v;
    else rest[k] = v;
  }
  return { id: `gen_${++n}`, engine: 'flux2_dev_4bit', params, ...(rest as Partial<CreateGenerationInput>) };
}

function success(id: string, count = 2): GenerationSuccess {
  return {
    weights: 'demo',
    modelRevision: 'rev-1',
    timings: { queueWaitMs: 12.4, loadMs: 800, textEncodeMs: 30, denoiseMs: 5000.6, decodeMs: 40, encodeStoreMs: 9.5, totalMs: 5900 },
    images: Array.from({ length: count }, (_, index) => ({
      index,
      path: `images/${id}/${index}.png`,
      format: 'png',
      width: 1024,
      height: 1024,
      bytes: 1000 + index,
      sha256: `${index}`.padStart(64, '0'),
    })),
  };
}

/**
 * The same behaviour is required of both databases. `peer` opens the second writer for the
 * concurrency case: on PostgreSQL a second client; on SQLite the same client, because
 * better-sqlite3 waits for a lock synchronously, so two connections in one thread would wait on
 * each other (separate processes are covered by the lock-holder case below).
 */
function repositoryContract(open: () => Promise<PrismaService>, peer: 'same-client' | 'second-client') {
  let prisma: PrismaService;
  let repo: GenerationsRepository;
  beforeAll(async () => {
    prisma = await open();
    repo = new GenerationsRepository(prisma);
  });
  afterAll(async () => prisma?.onModuleDestroy());

  it('creates a queued record and reads it back with its images', async () => {
    const created = await repo.create(request({ seed: 0xffffffff, negative_prompt: 'blur', apiKeyId: null }));
    expect(created.status).toBe('queued');
    expect(created.attempts).toBe(0);
    const found = await repo.findById(created.id);
    expect(found).toMatchObject({ id: created.id, status: 'queued', negativePrompt: 'blur', origin: 'interactive', images: [] });
    // The largest seed survives the round trip exactly.
    expect(found!.seed).toBe(4294967295n);
    expect(await repo.findById('gen_missing')).toBeNull();
  });

  it('records a batch of requests in one statement, all or none', async () => {
    const batch = [request({ origin: 'batch' }), request({ origin: 'batch' }), request({ origin: 'batch', seed: 0xffffffff })];
    batch[1].params.negative_prompt = 'blur';
    batch[1].webhookUrl = 'https://example.test/hook';
    const before = Date.now();
    await repo.createMany(batch);
    const stored = await Promise.all(batch.map((b) => repo.findById(b.id)));
    // The raw statement stores what Prisma's own create stores: same values, defaults and types.
    const reference = await repo.create(request({ origin: 'batch', negative_prompt: 'blur', webhookUrl: 'https://example.test/hook' }));
    const { id: _id, createdAt: _at, ...expected } = reference;
    const { id: _id1, createdAt: at1, ...second } = stored[1]!;
    expect(second).toEqual(expected);
    expect(stored.map((g) => [g!.id, g!.status, g!.origin, g!.attempts, g!.images])).toEqual(batch.map((b) => [b.id, 'queued', 'batch', 0, []]));
    expect(stored[2]!.seed).toBe(4294967295n);
    expect(at1).toBeInstanceOf(Date);
    expect(at1.getTime()).toBeGreaterThanOrEqual(before - 1);
    expect(at1.getTime()).toBeLessThanOrEqual(reference.createdAt.getTime());
    // The timestamp compares with Prisma-bound dates (same stored format).
    const recent = await prisma.client.generation.findMany({ where: { id: { in: batch.map((b) => b.id) }, createdAt: { gte: new Date(before - 1) } } });
    expect(recent).toHaveLength(3);

    // One duplicate id rejects the whole statement: no half-recorded batch.
    const again = [request({ origin: 'batch' }), { ...batch[0] }];
    await expect(repo.createMany(again)).rejects.toThrow();
    expect(await repo.findById(again[0].id)).toBeNull();
  });

  it('records the largest batch (1,000 items) in one statement', async () => {
    const items = Array.from({ length: 1000 }, (_, i) => request({ origin: 'batch', seed: i }));
    await repo.createMany(items);
    const stored = await prisma.client.generation.findMany({ where: { id: { in: items.map((g) => g.id) } }, select: { seed: true } });
    expect(stored.map((g) => Number(g.seed)).sort((a, b) => a - b)).toEqual(items.map((_, i) => i));
  });

  it('rejects a seed outside 0…2^32-1 before touching the database', async () => {
    const input = request({ seed: 2 ** 32 });
    await expect(repo.create(input)).rejects.toThrow(RangeError);
    const first = request();
    await expect(repo.createMany([first, input])).rejects.toThrow(RangeError);
    expect(await repo.findById(input.id)).toBeNull();
    expect(await repo.findById(first.id)).toBeNull();
  });

  it('stores a success once: a repeated delivery adds no record and no images', async () => {
    const { id } = await repo.create(request());
    expect(await repo.markRunning(id, 'gpu0')).toBe('updated');
    expect(await repo.markSucceeded(id, success(id))).toBe('updated');
    // Second delivery of the same job, even with different results, changes nothing.
    expect(await repo.markSucceeded(id, { ...success(id, 3), modelRevision: 'rev-2' })).toBe('unchanged');

    const stored = await repo.findById(id);
    expect(stored).toMatchObject({ status: 'succeeded', workerId: 'gpu0', attempts: 1, weights: 'demo', modelRevision: 'rev-1' });
    expect(stored!.images.map((i) => [i.index, i.path])).toEqual([
      [0, `images/${id}/0.png`],
      [1, `images/${id}/1.png`],
    ]);
    // Fractional milliseconds are rounded into the integer columns.
    expect([stored!.queueWaitMs, stored!.denoiseMs, stored!.encodeStoreMs, stored!.totalMs]).toEqual([12, 5001, 10, 5900]);
    expect(stored!.finishedAt).toBeInstanceOf(Date);
    expect(await prisma.client.generation.count({ where: { id } })).toBe(1);
    expect(await prisma.client.generationImage.count({ where: { generationId: id } })).toBe(2);
  });

  it('lets exactly one of two concurrent success writes through', async () => {
    const other = peer === 'second-client' ? await open() : prisma;
    try {
      const otherRepo = new GenerationsRepository(other);
      const { id } = await repo.create(request());
      await repo.markRunning(id, 'gpu1');
      const outcomes = await Promise.all([repo.markSucceeded(id, success(id)), otherRepo.markSucceeded(id, success(id))]);
      expect(outcomes.sort()).toEqual(['unchanged', 'updated']);
      expect(await prisma.client.generationImage.count({ where: { generationId: id } })).toBe(2);
    } finally {
      if (other !== prisma) await other.onModuleDestroy();
    }
  });

  it('never moves a terminal record: cancelled and failed stay as they are', async () => {
    const cancelled = await repo.create(request());
    expect(await repo.markCancelled(cancelled.id)).toBe('updated');
    expect(await repo.markSucceeded(cancelled.id, success(cancelled.id))).toBe('unchanged');
    expect(await repo.markRunning(cancelled.id, 'gpu0')).toBe('unchanged');
    expect(await repo.findById(cancelled.id)).toMatchObject({ status: 'cancelled', images: [] });

    const failed = await repo.create(request());
    await repo.markRunning(failed.id, 'gpu0');
    expect(await repo.markFailed(failed.id, { code: 'bad_input', message: 'width must be a multiple of 16', field: 'width' })).toBe('updated');
    expect(await repo.markCancelled(failed.id)).toBe('unchanged');
    expect(await repo.markQueued(failed.id)).toBe('unchanged');
    expect(await repo.findById(failed.id)).toMatchObject({
      status: 'failed',
      errorCode: 'bad_input',
      errorMessage: 'width must be a multiple of 16',
      errorField: 'width',
    });
  });

  it('puts a running job back in the queue for a retry and counts each attempt', async () => {
    const { id } = await repo.create(request());
    await repo.markRunning(id, 'gpu0');
    expect(await repo.markQueued(id)).toBe('updated');
    expect(await repo.findById(id)).toMatchObject({ status: 'queued', workerId: null, attempts: 1 });
    await repo.markRunning(id, 'gpu1');
    expect(await repo.findById(id)).toMatchObject({ status: 'running', workerId: 'gpu1', attempts: 2 });
  });

  it('says not-found for an unknown id', async () => {
    expect(await repo.markRunning('gen_nope', 'gpu0')).toBe('not-found');
    expect(await repo.markSucceeded('gen_nope', success('gen_nope'))).toBe('not-found');
    expect(await repo.findById('gen_nope')).toBeNull();
  });

  it('pages through a filtered listing, newest first, with no gaps or repeats', async () => {
    await prisma.client.apiKey.create({
      data: { id: 'key_a', name: 'a', keyHash: 'hash_a', prefix: 'ff_a', rateLimitPerMinute: 60, maxConcurrentJobs: 2 },
    });
    const ids: string[] = [];
    for (let i = 0; i < 23; i++) {
      const engine = i % 2 ? 'sd3_medium' : 'realvis_xl';
      ids.push((await repo.create(request({ id: `list_${String(i).padStart(2, '0')}`, engine, apiKeyId: i % 3 ? 'key_a' : null }))).id);
    }
    const realvis = ids.filter((_, i) => i % 2 === 0);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await repo.list({ scope: everyOwner, engine: 'realvis_xl', cursor, limit: 5 });
      seen.push(...page.items.map((g) => g.id));
      cursor = page.nextCursor;
      pages++;
      // A record created mid-way is newer than the cursor, so it does not shift later pages.
      if (pages === 1) await repo.create(request({ engine: 'realvis_xl', id: 'list_late' }));
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual([...realvis].reverse());

    const byKey = await repo.list({ scope: ownerOf('key_a'), engine: 'sd3_medium', limit: 100 });
    expect(byKey.items.map((g) => g.id).sort()).toEqual(ids.filter((_, i) => i % 2 === 1 && i % 3 !== 0).sort());
    expect(byKey.nextCursor).toBeNull();

    await repo.markCancelled('list_04');
    expect((await repo.list({ scope: everyOwner, status: 'cancelled', engine: 'realvis_xl' })).items.map((g) => g.id)).toEqual(['list_04']);
    const smallest = await repo.list({ scope: everyOwner, limit: 0 });
    expect(smallest.items).toHaveLength(1);
    expect(smallest.nextCursor).not.toBeNull();
    await expect(repo.list({ scope: everyOwner, cursor: 'not-a-cursor' })).rejects.toThrow(InvalidCursorError);
  });

  it('keeps images with their generation and removes them with it', async () => {
    const { id } = await repo.create(request());
    await repo.markSucceeded(id, success(id));
    await prisma.client.generation.delete({ where: { id } });
    expect(await prisma.client.generationImage.count({ where: { generationId: id } })).toBe(0);
  });
}

describe('GenerationsRepository on SQLite', () => {
  let dir: TempDir;
  let url: string;
  beforeAll(async () => {
    dir = tempDir();
    url = dir.sqliteUrl('repo');
    await applyMigrations(url);
  });
  afterAll(() => dir.remove());

  repositoryContract(async () => {
    const service = new PrismaService({ databaseUrl: url });
    await service.onModuleInit();
    return service;
  }, 'same-client');

  it('configures the connection for several writing processes (WAL, busy timeout, foreign keys)', async () => {
    const service = new PrismaService({ databaseUrl: url });
    await service.onModuleInit();
    try {
      const [mode] = await service.client.$queryRawUnsafe<Array<{ journal_mode: string }>>('PRAGMA journal_mode');
      const [busy] = await service.client.$queryRawUnsafe<Array<{ timeout: bigint | number }>>('PRAGMA busy_timeout');
      const [fk] = await service.client.$queryRawUnsafe<Array<{ foreign_keys: bigint | number }>>('PRAGMA foreign_keys');
      expect(mode.journal_mode).toBe('wal');
      expect(Number(busy.timeout)).toBe(dbCore().SQLITE_BUSY_TIMEOUT_MS);
      expect(Number(fk.foreign_keys)).toBe(1);
    } finally {
      await service.onModuleDestroy();
    }
  });

  it('waits for another process holding the write lock instead of failing', async () => {
    const service = new PrismaService({ databaseUrl: url });
    await service.onModuleInit();
    const repo = new GenerationsRepository(service);
    const { id } = await repo.create(request());
    await repo.markRunning(id, 'gpu0');
    // Another process takes the write lock and keeps it for 1.5 s.
    const file = url.slice('file:'.length);
    const holder = spawn(process.execPath, [
      '-e',
      `const db = new (require('better-sqlite3'))(${JSON.stringify(file)});
       db.exec('BEGIN IMMEDIATE'); process.stdout.write('locked\\n');
       setTimeout(() => { db.exec('COMMIT'); db.close(); }, 1500);`,
    ], { cwd: process.cwd() });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('locked') && resolve());
        holder.once('exit', (code) => reject(new Error(`lock holder exited early (${code})`)));
      });
      const started = Date.now();
      expect(await repo.markSucceeded(id, success(id))).toBe('updated');
      expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
      expect((await repo.findById(id))!.images).toHaveLength(2);
    } finally {
      holder.kill();
      await service.onModuleDestroy();
    }
  });
});

const postgresReason = postgresUnavailableReason();
if (postgresReason) {
  // eslint-disable-next-line no-console
  console.warn(`PostgreSQL repository specs skipped: ${postgresReason}`);
}
(postgresReason ? describe.skip : describe)('GenerationsRepository on PostgreSQL', () => {
  let pg: TestPostgres;
  let url: string;
  beforeAll(async () => {
    pg = await startTestPostgres();
    url = await pg.createDatabase('repo');
    await applyMigrations(url);
  });
  afterAll(async () => pg?.stop());

  repositoryContract(async () => {
    const service = new PrismaService({ databaseUrl: url });
    await service.onModuleInit();
    expect(service.provider).toBe('postgresql');
    return service;
  }, 'second-client');
});
