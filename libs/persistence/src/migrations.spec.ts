import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dbCore } from './database-tools';
import { applyMigrations, pendingSchemaChanges, schemaDrift } from './migrations';
import { PrismaService } from './prisma.service';
import { postgresUnavailableReason, startTestPostgres, tempDir, type TempDir, type TestPostgres } from './testing/databases';

jest.setTimeout(120_000);

const migrationsDir = (provider: string) => join(dbCore().PRISMA_DIR, 'migrations', provider);
const migrationNames = (provider: string) =>
  readdirSync(migrationsDir(provider), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
const checksum = (provider: string, name: string) =>
  createHash('sha256').update(readFileSync(join(migrationsDir(provider), name, 'migration.sql'))).digest('hex');

describe('migration folders', () => {
  it('hold the same migrations for SQLite and PostgreSQL, each with its lock file', () => {
    const sqlite = migrationNames('sqlite');
    expect(sqlite.length).toBeGreaterThan(0);
    expect(migrationNames('postgresql')).toEqual(sqlite);
    expect(readFileSync(join(migrationsDir('sqlite'), 'migration_lock.toml'), 'utf8')).toContain('provider = "sqlite"');
    expect(readFileSync(join(migrationsDir('postgresql'), 'migration_lock.toml'), 'utf8')).toContain('provider = "postgresql"');
  });
});

describe('migrations on SQLite', () => {
  let dir: TempDir;
  beforeAll(() => (dir = tempDir()));
  afterAll(() => dir.remove());

  it('apply to an empty file, record Prisma bookkeeping, and apply nothing the second time', async () => {
    const url = dir.sqliteUrl('fresh');
    const first = await applyMigrations(url);
    expect(first).toEqual({ provider: 'sqlite', applied: migrationNames('sqlite'), edited: [], unknown: [] });

    const second = await applyMigrations(url);
    expect(second.applied).toEqual([]);

    const db = new Database(dbCore().sqliteFilePath(url), { readonly: true });
    try {
      const rows = db
        .prepare('SELECT migration_name, checksum, finished_at, rolled_back_at, applied_steps_count FROM _prisma_migrations ORDER BY migration_name')
        .all() as Array<{ migration_name: string; checksum: string; finished_at: string | null; rolled_back_at: string | null; applied_steps_count: number }>;
      expect(rows.map((r) => r.migration_name)).toEqual(migrationNames('sqlite'));
      for (const row of rows) {
        // The same checksum `prisma migrate deploy` computes, so it can take over this database.
        expect(row.checksum).toBe(checksum('sqlite', row.migration_name));
        expect(row.finished_at).not.toBeNull();
        expect(row.rolled_back_at).toBeNull();
      }
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    } finally {
      db.close();
    }
  });

  it('leave a database that matches schema.prisma exactly', async () => {
    const url = dir.sqliteUrl('drift');
    await applyMigrations(url);
    expect(await schemaDrift(url)).toBe('');
  });

  it('cover every change in schema.prisma (no migration left to write)', async () => {
    expect(await pendingSchemaChanges('sqlite')).toBe('');
  });

  it('report drift when the database no longer matches the schema', async () => {
    const url = dir.sqliteUrl('altered');
    await applyMigrations(url);
    const db = new Database(dbCore().sqliteFilePath(url));
    db.exec('DROP INDEX "Generation_engine_createdAt_idx"');
    db.close();
    expect(await schemaDrift(url)).toContain('CREATE INDEX "Generation_engine_createdAt_idx"');
  });

  it('run again while another process keeps the database open', async () => {
    const url = dir.sqliteUrl('busy');
    await applyMigrations(url);
    const service = new PrismaService({ databaseUrl: url });
    await service.onModuleInit();
    try {
      await service.client.apiKey.create({
        data: { id: 'k1', name: 'ci', keyHash: 'h1', prefix: 'ff_', rateLimitPerMinute: 60, maxConcurrentJobs: 2 },
      });
      expect((await applyMigrations(url)).applied).toEqual([]);
      expect(await service.client.apiKey.count()).toBe(1);
    } finally {
      await service.onModuleDestroy();
    }
  });

  it('run concurrently from several connections without applying anything twice', async () => {
    const url = dir.sqliteUrl('concurrent');
    const reports = await Promise.all([applyMigrations(url), applyMigrations(url), applyMigrations(url)]);
    expect(reports.flatMap((r) => r.applied).sort()).toEqual(migrationNames('sqlite'));
    expect(await schemaDrift(url)).toBe('');
  });

  it('refuse a URL that names no supported database', async () => {
    await expect(applyMigrations('mysql://localhost/flexy')).rejects.toThrow(/file:<path> \(SQLite\) or postgresql/);
  });
});

const postgresReason = postgresUnavailableReason();
if (postgresReason) {
  // eslint-disable-next-line no-console
  console.warn(`PostgreSQL migration specs skipped: ${postgresReason}`);
}
(postgresReason ? describe.skip : describe)('migrations on PostgreSQL', () => {
  let pg: TestPostgres;
  beforeAll(async () => (pg = await startTestPostgres()));
  afterAll(async () => pg?.stop());

  it('apply to an empty database, record Prisma bookkeeping, and apply nothing the second time', async () => {
    const url = await pg.createDatabase('fresh');
    const first = await applyMigrations(url);
    expect(first).toEqual({ provider: 'postgresql', applied: migrationNames('postgresql'), edited: [], unknown: [] });
    expect((await applyMigrations(url)).applied).toEqual([]);
    expect(await schemaDrift(url)).toBe('');
  });

  it('cover every change in schema.prisma, replayed on a shadow database that is dropped afterwards', async () => {
    expect(await pendingSchemaChanges('postgresql', pg.serverUrl)).toBe('');
    expect((await pg.listDatabases()).filter((name) => name.startsWith('prisma_migrate_shadow_db_'))).toEqual([]);
  });

  it('run concurrently from several connections without applying anything twice', async () => {
    const url = await pg.createDatabase('concurrent');
    const reports = await Promise.all([applyMigrations(url), applyMigrations(url), applyMigrations(url)]);
    const applied = reports.flatMap((r) => r.applied).sort();
    expect(applied).toEqual(migrationNames('postgresql'));
    expect(await schemaDrift(url)).toBe('');
  });
});
