import { resolveDatabaseUrl, runSchemaEngine, type DatabaseProvider } from './database-tools';

export interface MigrationReport {
  provider: DatabaseProvider;
  /** Migrations applied by this call, oldest first; empty when the database was up to date. */
  applied: string[];
  /** Applied migrations whose migration.sql changed afterwards (their checksum no longer matches). */
  edited: string[];
  /** Migrations recorded in the database but missing from this checkout (the database is newer). */
  unknown: string[];
}

/**
 * Applies pending migrations from prisma/migrations/<provider> with Prisma's schema engine and
 * records them in `_prisma_migrations`, as `prisma migrate deploy` does. Safe to call from
 * several processes at start; a second call applies nothing. SQLite files are left in WAL mode.
 */
export function applyMigrations(databaseUrl: string = resolveDatabaseUrl()): Promise<MigrationReport> {
  return runSchemaEngine<MigrationReport>('applyMigrations', [databaseUrl]);
}

/**
 * The SQL that would make the live database match prisma/schema.prisma, or '' when it already
 * does. Non-empty after migrations are applied means the migrations and the schema disagree.
 */
export function schemaDrift(databaseUrl: string = resolveDatabaseUrl()): Promise<string> {
  return runSchemaEngine<string>('diffDatabaseToSchema', [databaseUrl]);
}

/**
 * The SQL a new migration would need so that the committed migrations reach prisma/schema.prisma,
 * or '' when they do. Replays the migrations on a shadow database (SQLite: in memory;
 * PostgreSQL: a temporary database created on the server at `postgresServerUrl`).
 */
export function pendingSchemaChanges(provider: DatabaseProvider, postgresServerUrl?: string): Promise<string> {
  return runSchemaEngine<string>('diffMigrationsToSchema', [provider, postgresServerUrl]);
}
