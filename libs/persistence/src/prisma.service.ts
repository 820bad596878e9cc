import { Inject, Injectable, Logger, Optional, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import { PrismaPg } from '@prisma/adapter-pg';
import { databaseProvider, dbCore, resolveDatabaseUrl, type DatabaseProvider } from './database-tools';
import { PrismaClient as PostgresPrismaClient } from './generated/postgresql/client';
import { PrismaClient as SqlitePrismaClient } from './generated/sqlite/client';
import { applyMigrations } from './migrations';

/**
 * The Prisma client type. Both generated clients come from the same models; the SQLite one's API
 * is the portable subset, so code written against it runs on PostgreSQL too.
 */
export type DatabaseClient = SqlitePrismaClient;

export interface PersistenceOptions {
  /** Defaults to DATABASE_URL, else the embedded SQLite file. */
  databaseUrl?: string;
  /** Apply pending migrations before connecting (the gateway does this at start). */
  migrate?: boolean;
}

export const PERSISTENCE_OPTIONS = Symbol('PERSISTENCE_OPTIONS');

/** Opens a Prisma client on `databaseUrl` with the matching driver adapter. */
export function createDatabaseClient(databaseUrl: string): DatabaseClient {
  if (databaseProvider(databaseUrl) === 'postgresql') {
    const client = new PostgresPrismaClient({ adapter: new PrismaPg({ connectionString: databaseUrl }) });
    return client as unknown as DatabaseClient;
  }
  const core = dbCore();
  // `timeout` is SQLite's busy timeout: writers from other processes wait instead of failing.
  const adapter = new PrismaBetterSqlite3({ url: core.sqliteFilePath(databaseUrl), timeout: core.SQLITE_BUSY_TIMEOUT_MS });
  return new SqlitePrismaClient({ adapter });
}

/** Per-connection SQLite settings for several processes sharing one file. */
export async function configureSqlite(client: DatabaseClient): Promise<void> {
  // WAL: readers never block the writer. It persists in the file; applyMigrations sets it too.
  await client.$queryRawUnsafe('PRAGMA journal_mode = WAL');
  // NORMAL is durable across application crashes in WAL mode and much cheaper than FULL.
  await client.$executeRawUnsafe('PRAGMA synchronous = NORMAL');
  await client.$executeRawUnsafe('PRAGMA foreign_keys = ON');
}

@Injectable()
export class PrismaService implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger(PrismaService.name);
  readonly databaseUrl: string;
  readonly provider: DatabaseProvider;
  readonly client: DatabaseClient;

  constructor(@Optional() @Inject(PERSISTENCE_OPTIONS) private readonly options: PersistenceOptions = {}) {
    this.databaseUrl = options?.databaseUrl ?? resolveDatabaseUrl();
    this.provider = databaseProvider(this.databaseUrl);
    this.client = createDatabaseClient(this.databaseUrl);
  }

  async onModuleInit(): Promise<void> {
    if (this.options?.migrate) {
      const report = await applyMigrations(this.databaseUrl);
      if (report.applied.length) this.logger.log(`applied migrations: ${report.applied.join(', ')}`);
      for (const name of report.edited) this.logger.warn(`migration ${name} was edited after it was applied`);
      for (const name of report.unknown) this.logger.warn(`migration ${name} is in the database but not in this build`);
    }
    await this.client.$connect();
    if (this.provider === 'sqlite') await configureSqlite(this.client);
  }

  async onModuleDestroy(): Promise<void> {
    await this.client.$disconnect();
  }
}
