// Real databases for the persistence specs: SQLite files in a temporary folder and, where the
// PostgreSQL server binaries are installed, a private PostgreSQL cluster.
import { PrismaPg } from '@prisma/adapter-pg';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dbCore } from '../database-tools';

interface TempPostgresModule {
  findPostgres(): { binDir: string } | { reason: string };
  startTemporaryPostgres(): Promise<{ url: string; stop(): Promise<void> }>;
}

function tempPostgres(): TempPostgresModule {
  return require(join(dbCore().PRISMA_DIR, 'tools', 'temp-postgres.cjs')) as TempPostgresModule;
}

export interface TempDir {
  path: string;
  sqliteUrl(name?: string): string;
  remove(): void;
}

export function tempDir(): TempDir {
  const path = mkdtempSync(join(tmpdir(), 'flexy-persistence-'));
  let n = 0;
  return {
    path,
    sqliteUrl: (name = `db-${++n}`) => `file:${join(path, `${name}.db`)}`,
    remove: () => rmSync(path, { recursive: true, force: true }),
  };
}

/** Why PostgreSQL specs cannot run here, or null when they can. */
export function postgresUnavailableReason(): string | null {
  const found = tempPostgres().findPostgres();
  return 'reason' in found ? found.reason : null;
}

export interface TestPostgres {
  /** A URL on the `postgres` database, allowed to create databases. */
  serverUrl: string;
  /** A new empty database on the server. */
  createDatabase(name: string): Promise<string>;
  listDatabases(): Promise<string[]>;
  stop(): Promise<void>;
}

export async function startTestPostgres(): Promise<TestPostgres> {
  const server = await tempPostgres().startTemporaryPostgres();
  const run = async <T>(fn: (adapter: Awaited<ReturnType<PrismaPg['connect']>>) => Promise<T>): Promise<T> => {
    const adapter = await new PrismaPg({ connectionString: server.url }).connect();
    try {
      return await fn(adapter);
    } finally {
      await adapter.dispose();
    }
  };
  return {
    serverUrl: server.url,
    async createDatabase(name) {
      await run((a) => a.executeScript(`CREATE DATABASE "${name}"`));
      const url = new URL(server.url);
      url.pathname = `/${name}`;
      return url.toString();
    },
    async listDatabases() {
      const result = await run((a) => a.queryRaw({ sql: 'SELECT datname FROM pg_database ORDER BY datname', args: [], argTypes: [] }));
      return result.rows.map((row) => String(row[0]));
    },
    stop: () => server.stop(),
  };
}
