/**
 * An owner's list page and a single read over a million recorded generations, on SQLite and on
 * PostgreSQL, through the repository the gateway's routes use (Prisma included): newest first, with
 * and without status and engine filters, time windows, deep cursors, the admin's every-owner list, and
 * a read by id (found, and another owner's). Each query's plan is recorded beside its timings.
 *
 *   npm run bench:lists
 *   BENCH_ROWS=100000 BENCH_DATABASES=sqlite npm run bench:lists     (a quick look)
 *   BENCH_ITERATIONS=50  BENCH_VARIANT='what differs' npm run bench:lists (a tree changed on purpose)
 *
 * The databases are filled with raw multi-row INSERTs straight through the drivers (a million rows
 * through Prisma would take minutes); a spot check makes sure those rows read back through Prisma
 * exactly as rows Prisma wrote would. SQLite runs without ANALYZE statistics, as the service runs it;
 * PostgreSQL gets the VACUUM ANALYZE its autovacuum would give a freshly loaded table.
 */
import { applyMigrations, everyOwner, GenerationsRepository, ownerOf, PrismaService, type OwnerScope, type ListGenerationsQuery } from '@flexy/persistence';
import { ENGINE_IDS } from '@flexy/engines';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Pool } from 'pg';
import { ROOT } from '../test/support/stack';
import { recordResults } from './support/record-result';

const ROWS = Number(process.env.BENCH_ROWS || 1_000_000);
const ITERATIONS = Number(process.env.BENCH_ITERATIONS || 200);
const WARMUP = 20;
const DATABASES = (process.env.BENCH_DATABASES || 'sqlite,postgresql').split(',');
const TARGET_P95_MS = 50;
/** What differs from the commit that runs (a dirty tree on purpose, e.g. an earlier schema for comparison). */
const VARIANT = process.env.BENCH_VARIANT || null;
const PAGE = 20;
const DAY_MS = 24 * 3600_000;
const SPAN_MS = 180 * DAY_MS;

// ---- the data: deterministic, shaped like a service with one big client and a long tail ------------

/** A small seeded generator (mulberry32): the same rows every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Owners and their share of the rows: one large app key, twenty medium, the anonymous owner, two hundred small. */
const HEAVY = 'key_bench_heavy';
const SMALL = 'key_bench_small_0';
const OWNERS: Array<{ id: string | null; share: number }> = [
  { id: HEAVY, share: 0.25 },
  ...Array.from({ length: 20 }, (_, i) => ({ id: `key_bench_medium_${i}`, share: 0.025 })),
  { id: null, share: 0.05 },
  ...Array.from({ length: 200 }, (_, i) => ({ id: `key_bench_small_${i}`, share: 0.001 })),
];
const STATUSES: Array<[string, number]> = [['succeeded', 0.9], ['failed', 0.04], ['cancelled', 0.04], ['queued', 0.015], ['running', 0.005]];

interface Row {
  id: string;
  status: string;
  engine: string;
  apiKeyId: string | null;
  createdAt: Date;
  deleted: boolean;
}

function pick<T>(r: number, weighted: Array<[T, number]>): T {
  for (const [value, weight] of weighted) {
    if (r < weight) return value;
    r -= weight;
  }
  return weighted[weighted.length - 1][0];
}

/**
 * Rows oldest first over 180 days; every four consecutive rows share a millisecond (a group-commit
 * round writes one created_at for all its rows), so cursors must order ties by id.
 */
function* rows(): Generator<Row> {
  const random = prng(42);
  const start = Date.now() - SPAN_MS;
  const owners = OWNERS.map((o): [string | null, number] => [o.id, o.share]);
  for (let i = 0; i < ROWS; i++) {
    const hex = Array.from({ length: 4 }, () => Math.floor(random() * 0x100000000).toString(16).padStart(8, '0')).join('');
    const status = pick(random(), STATUSES);
    yield {
      id: `gen_${hex}`,
      status,
      engine: ENGINE_IDS[Math.floor(random() * ENGINE_IDS.length)],
      apiKeyId: pick(random(), owners),
      createdAt: new Date(start + Math.floor(i / 4) * Math.floor((SPAN_MS * 4) / ROWS)),
      deleted: status !== 'queued' && status !== 'running' && random() < 0.01,
    };
  }
}

/** What the measured queries pick from: the heavy owner's rows and a sample of everyone's. */
interface Sample {
  heavy: Array<{ id: string; createdAt: Date }>;
  everyone: Array<{ id: string; createdAt: Date; apiKeyId: string | null }>;
}

const COLUMNS = ['id', 'status', 'engine', 'prompt', 'seed', 'steps', 'guidance', 'width', 'height', 'numImages', 'origin', 'apiKeyId', 'weights', 'totalMs', 'errorCode', 'errorMessage', 'createdAt', 'finishedAt', 'deletedAt'];
const IMAGE_COLUMNS = ['generationId', 'index', 'path', 'format', 'width', 'height', 'bytes', 'sha256'];

function values(row: Row, date: (d: Date) => unknown): unknown[] {
  const finished = row.status === 'queued' || row.status === 'running' ? null : date(new Date(row.createdAt.getTime() + 4000));
  return [
    row.id, row.status, row.engine, 'a lighthouse at dawn, oil painting, dramatic sky', 1234567, 28, 3.5, 1024, 1024, 1, 'interactive', row.apiKeyId,
    row.status === 'succeeded' ? 'hub' : null, row.status === 'succeeded' ? 4200 : null,
    row.status === 'failed' ? 'oom' : null, row.status === 'failed' ? 'CUDA out of memory' : null,
    date(row.createdAt), finished, row.deleted ? finished : null,
  ];
}

function imageValues(row: Row): unknown[] {
  return [row.id, 0, `${row.id.slice(-2)}/${row.id}_0.png`, 'png', 1024, 1024, 1_400_000, '0'.repeat(64)];
}

/** Fills the database through `insert(table, columns, rows)`, `chunk` rows per statement; answers the sample. */
async function fill(insert: (table: string, columns: string[], rows: unknown[][]) => Promise<void>, date: (d: Date) => unknown, chunk: number): Promise<Sample> {
  const sample: Sample = { heavy: [], everyone: [] };
  const keep = prng(7);
  let generations: unknown[][] = [];
  let images: unknown[][] = [];
  const t0 = Date.now();
  let n = 0;
  for (const row of rows()) {
    generations.push(values(row, date));
    if (row.status === 'succeeded') images.push(imageValues(row));
    if (row.apiKeyId === HEAVY && !row.deleted) sample.heavy.push({ id: row.id, createdAt: row.createdAt });
    if (keep() < 0.01) sample.everyone.push({ id: row.id, createdAt: row.createdAt, apiKeyId: row.apiKeyId });
    if (generations.length === chunk) {
      // Images after their generations (a foreign key).
      await insert('Generation', COLUMNS, generations);
      await insert('GenerationImage', IMAGE_COLUMNS, images);
      generations = [];
      images = [];
    }
    if (++n % 200_000 === 0) console.log(`  ${n} rows (${Math.round((Date.now() - t0) / 1000)} s)`);
  }
  if (generations.length) await insert('Generation', COLUMNS, generations);
  if (images.length) await insert('GenerationImage', IMAGE_COLUMNS, images);
  return sample;
}

const quoted = (names: string[]) => names.map((c) => `"${c}"`).join(', ');

async function insertOwners(exec: (sql: string, params: unknown[]) => Promise<void> | void): Promise<void> {
  for (const owner of OWNERS) {
    if (!owner.id) continue;
    await exec('INSERT INTO "ApiKey" ("id", "name", "keyHash", "prefix", "role", "rateLimitPerMinute", "maxConcurrentJobs") VALUES ($1, $2, $3, $4, $5, $6, $7)', [
      owner.id, owner.id, `hash-${owner.id}`, owner.id.slice(-8), 'user', 60, 4,
    ]);
  }
}

// ---- the two databases -------------------------------------------------------------------------

interface Target {
  url: string;
  sample: Sample;
  /** The plan of a captured statement. */
  explain(sql: string, args: unknown[]): Promise<string>;
  close(): Promise<void>;
}

/** SQLite stores Prisma's DateTime as this text; comparisons are textual, so the fill must write exactly it. */
const sqliteDate = (d: Date) => d.toISOString().replace('Z', '+00:00');

async function sqliteTarget(dir: string): Promise<Target> {
  const url = `file:${join(dir, 'bench.db')}`;
  await applyMigrations(url);
  const db = new Database(join(dir, 'bench.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = OFF');
  const statements = new Map<string, Database.Statement>();
  const insert = async (table: string, columns: string[], rows: unknown[][]) => {
    const key = `${table}:${rows.length}`;
    let stmt = statements.get(key);
    if (!stmt) {
      const tuple = `(${columns.map(() => '?').join(', ')})`;
      stmt = db.prepare(`INSERT INTO "${table}" (${quoted(columns)}) VALUES ${Array(rows.length).fill(tuple).join(', ')}`);
      statements.set(key, stmt);
    }
    stmt.run(rows.flat());
  };
  await insertOwners((sql, params) => void db.prepare(sql.replace(/\$\d+/g, '?')).run(params));
  db.exec('BEGIN');
  const sample = await fill(insert, sqliteDate, 500);
  db.exec('COMMIT');
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  const reader = new Database(join(dir, 'bench.db'), { readonly: true });
  return {
    url,
    sample,
    explain: async (sql, args) =>
      (reader.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(args as never[]) as Array<{ detail: string }>).map((r) => r.detail).join('\n'),
    close: async () => {
      reader.close();
    },
  };
}

async function postgresTarget(): Promise<Target & { stopServer(): Promise<void> }> {
  const { startTemporaryPostgres } = require(join(ROOT, 'prisma/tools/temp-postgres.cjs')) as { startTemporaryPostgres(): Promise<{ url: string; stop(): Promise<void> }> };
  const server = await startTemporaryPostgres();
  const admin = new Client({ connectionString: server.url });
  await admin.connect();
  await admin.query('CREATE DATABASE bench');
  await admin.end();
  const url = server.url.replace(/\/postgres$/, '/bench');
  await applyMigrations(url);
  const client = new Client({ connectionString: url });
  await client.connect();
  const insert = async (table: string, columns: string[], rows: unknown[][]) => {
    const width = columns.length;
    const tuples = rows.map((_, r) => `(${columns.map((__, c) => `$${r * width + c + 1}`).join(', ')})`);
    await client.query(`INSERT INTO "${table}" (${quoted(columns)}) VALUES ${tuples.join(', ')}`, rows.flat());
  };
  await insertOwners((sql, params) => client.query(sql, params).then(() => undefined));
  // Timestamps without a time zone, in UTC, as Prisma keeps them.
  const sample = await fill(insert, (d) => d.toISOString().replace('T', ' ').replace('Z', ''), 2000);
  await client.query('VACUUM ANALYZE');
  return {
    url,
    sample,
    explain: async (sql, args) => {
      const r = await client.query(`EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY OFF) ${sql}`, args);
      return r.rows.map((row: Record<string, string>) => row['QUERY PLAN']).join('\n');
    },
    close: () => client.end(),
    stopServer: () => server.stop(),
  };
}

// ---- what the repository sends, captured at the driver -------------------------------------------

interface Captured {
  sql: string;
  args: unknown[];
}
let capture: Captured[] | null = null;

/** Records the statements Prisma sends while `capture` is set (bench instrumentation; the drivers are untouched otherwise). */
function instrumentDrivers(): void {
  const probe = new Database(':memory:');
  const statementProto = Object.getPrototypeOf(probe.prepare('SELECT 1')) as { bind(...args: unknown[]): unknown; source: string };
  probe.close();
  const bind = statementProto.bind;
  statementProto.bind = function (this: { source: string }, ...args: unknown[]) {
    capture?.push({ sql: this.source, args: args.flat() });
    return bind.apply(this, args);
  };
  for (const proto of [Pool.prototype, Client.prototype] as Array<{ query: (...a: unknown[]) => unknown }>) {
    const query = proto.query;
    proto.query = function (this: unknown, ...a: unknown[]) {
      const config = a[0] as { text?: string; values?: unknown[] } | string;
      if (typeof config === 'object' && config?.text) capture?.push({ sql: config.text, args: config.values ?? [] });
      return query.apply(this, a);
    };
  }
}

// ---- the measured queries ------------------------------------------------------------------------

const cursorOf = (row: { id: string; createdAt: Date }) => Buffer.from(JSON.stringify([row.createdAt.getTime(), row.id])).toString('base64url');

interface Shape {
  name: string;
  run(repo: GenerationsRepository, random: () => number): Promise<unknown>;
}

function shapes(sample: Sample): Shape[] {
  const heavy = ownerOf(HEAVY);
  const at = <T>(list: T[], random: () => number, from = 0, to = 1) => list[Math.floor((from + random() * (to - from)) * list.length)];
  const list = (scope: OwnerScope, extra: (random: () => number) => Partial<ListGenerationsQuery>) => (repo: GenerationsRepository, random: () => number) =>
    repo.list({ scope, limit: PAGE, ...extra(random) });
  // Newest first: index 0 of `heavy` is the oldest row; "deep" cursors sit in the older half.
  const deep = (random: () => number) => ({ cursor: cursorOf(at(sample.heavy, random, 0, 0.5)) });
  const engine = (random: () => number) => ENGINE_IDS[Math.floor(random() * ENGINE_IDS.length)];
  return [
    { name: 'owner list, first page', run: list(heavy, () => ({})) },
    { name: 'owner list, status=succeeded', run: list(heavy, () => ({ status: 'succeeded' })) },
    { name: 'owner list, status=failed', run: list(heavy, () => ({ status: 'failed' })) },
    { name: 'owner list, status=running (rare)', run: list(heavy, () => ({ status: 'running' })) },
    { name: 'owner list, engine', run: list(heavy, (r) => ({ engine: engine(r) })) },
    { name: 'owner list, status=succeeded + engine', run: list(heavy, (r) => ({ status: 'succeeded', engine: engine(r) })) },
    { name: 'owner list, deep cursor', run: list(heavy, deep) },
    { name: 'owner list, deep cursor, status=failed', run: list(heavy, (r) => ({ ...deep(r), status: 'failed' })) },
    { name: 'owner list, deep cursor, engine', run: list(heavy, (r) => ({ ...deep(r), engine: engine(r) })) },
    {
      name: 'owner list, created_before + created_after (30 days)',
      run: list(heavy, (r) => {
        const before = at(sample.heavy, r, 0.2, 1).createdAt;
        return { createdBefore: before, createdAfter: new Date(before.getTime() - 30 * DAY_MS) };
      }),
    },
    { name: 'small owner list, first page', run: list(ownerOf(SMALL), () => ({})) },
    { name: 'anonymous owner list, deep cursor', run: list(ownerOf(null), (r) => ({ cursor: cursorOf(at(sample.everyone, r, 0, 0.5)) })) },
    { name: 'admin list (every owner), first page', run: list(everyOwner, () => ({})) },
    { name: 'admin list, deep cursor, status=failed', run: list(everyOwner, (r) => ({ cursor: cursorOf(at(sample.everyone, r, 0, 0.5)), status: 'failed' })) },
    { name: 'single read (owner)', run: (repo, r) => repo.findVisible(at(sample.heavy, r).id, heavy) },
    {
      name: "single read, another owner's (404)",
      run: (repo, r) => repo.findVisible(at(sample.heavy, r).id, ownerOf(SMALL)),
    },
  ];
}

function percentile(sorted: number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Math.round(sorted[i] * 100) / 100;
}

async function measure(database: string, target: Target) {
  const prisma = new PrismaService({ databaseUrl: target.url });
  await prisma.onModuleInit();
  const repo = new GenerationsRepository(prisma);
  // The spot check: a row from the raw fill reads back through Prisma with its own time.
  const probe = target.sample.heavy[target.sample.heavy.length - 1];
  const read = await repo.findVisible(probe.id, ownerOf(HEAVY));
  if (read?.createdAt.getTime() !== probe.createdAt.getTime()) throw new Error(`${database}: the filled rows do not read back as Prisma's own (${read?.createdAt.toISOString()} vs ${probe.createdAt.toISOString()})`);
  const all = shapes(target.sample);
  const times = all.map(() => [] as number[]);
  const pageSizes = all.map(() => 0);
  const randoms = all.map(() => prng(99));
  const results = [];
  try {
    // Round robin: a burst of load from elsewhere on the machine falls on every query alike.
    for (let i = 0; i < WARMUP + ITERATIONS; i++) {
      for (const [k, shape] of all.entries()) {
        const t0 = performance.now();
        const out = await shape.run(repo, randoms[k]);
        const ms = performance.now() - t0;
        if (i >= WARMUP) times[k].push(ms);
        pageSizes[k] = out && typeof out === 'object' && 'items' in out ? (out as { items: unknown[] }).items.length : out ? 1 : 0;
      }
    }
    for (const [k, shape] of all.entries()) {
      capture = [];
      await shape.run(repo, prng(99));
      const statements = capture;
      capture = null;
      const plans = [];
      for (const s of statements.filter((st) => /Generation/.test(st.sql) && /^\s*SELECT/i.test(st.sql))) plans.push(await target.explain(s.sql, s.args));
      const sorted = times[k].sort((a, b) => a - b);
      const row = {
        database,
        ...(VARIANT ? { variant: VARIANT } : {}),
        query: shape.name,
        rows: ROWS,
        iterations: ITERATIONS,
        page_size: pageSizes[k],
        p50_ms: percentile(sorted, 50),
        p95_ms: percentile(sorted, 95),
        p99_ms: percentile(sorted, 99),
        target_met: percentile(sorted, 95) < TARGET_P95_MS,
        plan: plans.join('\n--\n'),
      };
      console.log(`${database.padEnd(10)} ${shape.name.padEnd(52)} p50 ${row.p50_ms} ms  p95 ${row.p95_ms} ms  p99 ${row.p99_ms} ms`);
      results.push(row);
    }
  } finally {
    await prisma.onModuleDestroy();
  }
  return results;
}

async function main(): Promise<void> {
  instrumentDrivers();
  const all = [];
  for (const database of DATABASES) {
    const t0 = Date.now();
    console.log(`${database}: filling ${ROWS} generations`);
    if (database === 'sqlite') {
      const dir = mkdtempSync(join(tmpdir(), 'flexy-bench-lists-'));
      try {
        const target = await sqliteTarget(dir);
        const fillS = Math.round((Date.now() - t0) / 1000);
        try {
          all.push(...(await measure(database, target)).map((r) => ({ ...r, fill_s: fillS })));
        } finally {
          await target.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    } else if (database === 'postgresql') {
      const target = await postgresTarget();
      const fillS = Math.round((Date.now() - t0) / 1000);
      try {
        all.push(...(await measure(database, target)).map((r) => ({ ...r, fill_s: fillS })));
      } finally {
        await target.close();
        await target.stopServer();
      }
    } else {
      throw new Error(`unknown database ${database} (sqlite, postgresql)`);
    }
  }
  const settings = Object.entries({ BENCH_ROWS: ROWS === 1_000_000 ? null : ROWS, BENCH_ITERATIONS: ITERATIONS === 200 ? null : ITERATIONS, BENCH_DATABASES: DATABASES.join(',') === 'sqlite,postgresql' ? null : DATABASES.join(','), BENCH_VARIANT: VARIANT && JSON.stringify(VARIANT) });
  const command = [...settings.filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`), 'npm run bench:lists'].join(' ');
  recordResults('lists', all, command);
  const missed = all.filter((r) => !r.target_met);
  console.log(missed.length ? `p95 over ${TARGET_P95_MS} ms: ${missed.map((r) => `${r.database} ${r.query} (${r.p95_ms} ms)`).join('; ')}` : `every query under ${TARGET_P95_MS} ms at p95`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
