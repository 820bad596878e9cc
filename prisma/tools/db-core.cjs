// @ts-check
// Database tooling shared by the npm scripts (db:generate, db:migrate, db:migration:new) and by
// libs/persistence at run time. Plain Node so it works before anything is compiled.
//
// Migrations are authored and applied by Prisma's own schema engine (@prisma/schema-engine-wasm)
// talking to the database through Prisma's driver adapters, so the SQL and the
// `_prisma_migrations` bookkeeping are exactly what `prisma migrate` would produce.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { createHash, randomUUID } = require('node:crypto');

const PRISMA_DIR = path.resolve(__dirname, '..');
const REPO_ROOT = path.resolve(PRISMA_DIR, '..');
const SCHEMA_PATH = path.join(PRISMA_DIR, 'schema.prisma');
const GENERATED_DIR = path.join(REPO_ROOT, 'libs', 'persistence', 'src', 'generated');
const DERIVED_POSTGRES_SCHEMA_PATH = path.join(GENERATED_DIR, 'schema.postgresql.prisma');
/** @type {Record<Provider, string>} */
const MIGRATIONS_DIRS = {
  sqlite: path.join(PRISMA_DIR, 'migrations', 'sqlite'),
  postgresql: path.join(PRISMA_DIR, 'migrations', 'postgresql'),
};
const PROVIDERS = /** @type {const} */ (['sqlite', 'postgresql']);
// Several processes (gateway, supervisors) share one SQLite file; writers wait this long for the
// lock. better-sqlite3 waits synchronously, so the wait is short: write transactions take ms.
const SQLITE_BUSY_TIMEOUT_MS = 5_000;
// Migrations run in a worker thread or a CLI, where waiting blocks nothing else; processes that
// start together queue behind the one applying them.
const SQLITE_MIGRATION_LOCK_TIMEOUT_MS = 60_000;
const NO_FILTERS = { externalTables: [], externalEnums: [] };

/** @typedef {'sqlite' | 'postgresql'} Provider */

/** The embedded SQLite file in DATA_DIR (default <repo>/.data), as libs/config places it. */
function defaultDatabaseUrl(env = process.env) {
  const dataDir = env.DATA_DIR ? path.resolve(REPO_ROOT, env.DATA_DIR) : path.join(REPO_ROOT, '.data');
  return `file:${path.join(dataDir, 'flexyface.db')}`;
}

/** DATABASE_URL, or the embedded SQLite file. */
function resolveDatabaseUrl(env = process.env) {
  const url = env.DATABASE_URL && env.DATABASE_URL.trim();
  return url || defaultDatabaseUrl(env);
}

/** @param {string} url @returns {Provider} */
function providerOf(url) {
  if (/^file:/i.test(url)) return 'sqlite';
  if (/^postgres(ql)?:\/\//i.test(url)) return 'postgresql';
  throw new Error(`DATABASE_URL must be file:<path> (SQLite) or postgresql://… (PostgreSQL), got "${redactUrl(url)}"`);
}

/** @param {string} url */
function redactUrl(url) {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}

/**
 * The file behind a `file:` URL. Relative paths resolve against the working directory, as the
 * driver adapter does; query parameters (Prisma's old `?connection_limit=`) are ignored.
 * @param {string} url
 */
function sqliteFilePath(url) {
  const rest = url.replace(/^file:/i, '').replace(/\?.*$/, '');
  if (rest === ':memory:' || rest === '') return ':memory:';
  return path.resolve(rest.replace(/^\/\/(?=\/)/, ''));
}

/**
 * The PostgreSQL variant of schema.prisma. Only the datasource provider and the client output
 * change, which is why schema.prisma must stay portable.
 * @param {string} source
 */
function derivePostgresSchema(source) {
  const datasource = /(datasource\s+\w+\s*\{[^}]*?\bprovider\s*=\s*)"sqlite"/;
  const output = /(generator\s+client\s*\{[^}]*?\boutput\s*=\s*)"([^"]*)"/;
  if (!datasource.test(source)) throw new Error(`${SCHEMA_PATH}: expected a datasource with provider = "sqlite"`);
  const match = output.exec(source);
  if (!match || path.resolve(PRISMA_DIR, match[2]) !== path.join(GENERATED_DIR, 'sqlite')) {
    throw new Error(`${SCHEMA_PATH}: expected generator client output = "${path.relative(PRISMA_DIR, path.join(GENERATED_DIR, 'sqlite'))}"`);
  }
  const relOutput = path.relative(path.dirname(DERIVED_POSTGRES_SCHEMA_PATH), path.join(GENERATED_DIR, 'postgresql'));
  return (
    `// Derived from prisma/schema.prisma by prisma/tools/db-core.cjs. Do not edit.\n` +
    source.replace(datasource, '$1"postgresql"').replace(output, `$1"./${relOutput.split(path.sep).join('/')}"`)
  );
}

/** @param {Provider} provider */
function readSchema(provider) {
  const source = fs.readFileSync(SCHEMA_PATH, 'utf8');
  return provider === 'sqlite' ? source : derivePostgresSchema(source);
}

/** @param {Provider} provider */
function schemaFiles(provider) {
  const filePath = provider === 'sqlite' ? SCHEMA_PATH : DERIVED_POSTGRES_SCHEMA_PATH;
  return [{ path: filePath, content: readSchema(provider) }];
}

/** The migrations folder in the shape the schema engine expects. @param {Provider} provider */
function readMigrationsList(provider) {
  const baseDir = MIGRATIONS_DIRS[provider];
  const lockPath = path.join(baseDir, 'migration_lock.toml');
  const names = fs.existsSync(baseDir)
    ? fs.readdirSync(baseDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort()
    : [];
  return {
    baseDir,
    lockfile: { path: lockPath, content: fs.existsSync(lockPath) ? fs.readFileSync(lockPath, 'utf8') : null },
    shadowDbInitScript: '',
    migrationDirectories: names.map((name) => {
      const file = path.join(baseDir, name, 'migration.sql');
      let content;
      try {
        content = { tag: /** @type {const} */ ('ok'), value: fs.readFileSync(file, 'utf8') };
      } catch (error) {
        content = { tag: /** @type {const} */ ('error'), value: String(/** @type {Error} */ (error).message) };
      }
      return { path: name, migrationFile: { path: 'migration.sql', content } };
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// Driver adapters for the schema engine

/**
 * @param {string} url
 * @returns {import('@prisma/driver-adapter-utils').SqlMigrationAwareDriverAdapterFactory}
 */
function migrationAdapterFactory(url) {
  const provider = providerOf(url);
  if (provider === 'sqlite') {
    const { PrismaBetterSqlite3 } = require('@prisma/adapter-better-sqlite3');
    const file = sqliteFilePath(url);
    if (file !== ':memory:') fs.mkdirSync(path.dirname(file), { recursive: true });
    const base = new PrismaBetterSqlite3({ url: file, timeout: SQLITE_MIGRATION_LOCK_TIMEOUT_MS });
    return {
      provider: base.provider,
      adapterName: base.adapterName,
      connect: () => base.connect(),
      // The engine replays whole migration scripts on the shadow database through executeRaw,
      // which better-sqlite3 limits to one statement; scripts go through exec() instead.
      connectToShadowDb: async () => {
        const adapter = await base.connectToShadowDb();
        const executeRaw = adapter.executeRaw.bind(adapter);
        adapter.executeRaw = async (query) => {
          try {
            return await executeRaw(query);
          } catch (error) {
            if (!(error instanceof RangeError) || query.args.length > 0) throw error;
            await adapter.executeScript(query.sql);
            return 0;
          }
        };
        return adapter;
      },
    };
  }
  // One pool per connection: each adapter ends its own pool when the engine disposes it.
  const base = catalogReadingPg(url);
  return {
    provider: base.provider,
    adapterName: base.adapterName,
    connect: () => catalogReadingPg(url).connect(),
    // The adapter's own shadow database ignores the database name when given a connection
    // string and drops it before closing its pool; this one targets a fresh database and
    // closes the pool before dropping it.
    connectToShadowDb: async () => {
      const admin = await catalogReadingPg(url).connect();
      const name = `prisma_migrate_shadow_db_${randomUUID()}`;
      await admin.executeScript(`CREATE DATABASE "${name}"`);
      const shadowUrl = new URL(url);
      shadowUrl.pathname = `/${name}`;
      const shadow = await catalogReadingPg(shadowUrl.toString()).connect();
      const dispose = shadow.dispose.bind(shadow);
      shadow.dispose = async () => {
        try {
          await dispose();
          await admin.executeScript(`DROP DATABASE IF EXISTS "${name}"`);
        } finally {
          await admin.dispose();
        }
      };
      return shadow;
    },
  };
}

/**
 * A PostgreSQL adapter factory for the schema engine. The engine reads pg_catalog columns of
 * type "char" (constraint and enum kinds), which the adapter rejects as an unknown type;
 * pg already returns them as strings, so they are reported to the adapter as text.
 * @param {string} connectionString
 */
function catalogReadingPg(connectionString) {
  const adapterPath = require.resolve('@prisma/adapter-pg');
  const { PrismaPg } = require(adapterPath);
  const pg = require(require('node:module').createRequire(adapterPath).resolve('pg'));
  const PG_CHAR = 18;
  const PG_TEXT = 25;
  /** @param {any} result */
  const relabel = (result) => {
    for (const r of Array.isArray(result) ? result : [result]) {
      for (const field of r?.fields ?? []) if (field.dataTypeID === PG_CHAR) field.dataTypeID = PG_TEXT;
    }
    return result;
  };
  class CatalogClient extends pg.Client {
    /** @param {any[]} args */
    query(...args) {
      const callback = args[args.length - 1];
      if (typeof callback === 'function') {
        args[args.length - 1] = (/** @type {any} */ error, /** @type {any} */ result) => callback(error, error ? result : relabel(result));
        return super.query(...args);
      }
      const pending = super.query(...args);
      return pending && typeof pending.then === 'function' ? pending.then(relabel) : pending;
    }
  }
  return new PrismaPg(new pg.Pool({ connectionString, Client: CatalogClient }), { disposeExternalPool: true });
}

// ---------------------------------------------------------------------------------------------
// The schema engine

/** @type {typeof import('@prisma/schema-engine-wasm') | undefined} */
let engineRuntime;

function loadEngineRuntime() {
  if (engineRuntime) return engineRuntime;
  // The package targets bundlers (`import * as wasm from './x.wasm'`), so the module is
  // instantiated here against its JS glue. The glue is ESM; Node >= 20.19 require()s it.
  const gluePath = require.resolve('@prisma/schema-engine-wasm/schema_engine_bg');
  const glue = require(gluePath);
  const bytes = fs.readFileSync(path.join(path.dirname(gluePath), 'schema_engine_bg.wasm'));
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { './schema_engine_bg.js': glue });
  glue.__wbg_set_wasm(instance.exports);
  /** @type {any} */ (instance.exports).__wbindgen_start?.();
  engineRuntime = glue;
  return glue;
}

/**
 * Runs `fn` with a schema engine connected to `url`, then releases every connection it opened
 * (the engine holds SQLite in exclusive locking mode while connected).
 * @template T
 * @param {string} url
 * @param {(engine: import('@prisma/schema-engine-wasm').SchemaEngine, provider: Provider) => Promise<T>} fn
 * @returns {Promise<T>}
 */
async function withSchemaEngine(url, fn) {
  const provider = providerOf(url);
  const { bindMigrationAwareSqlAdapterFactory } = require('@prisma/driver-adapter-utils');
  const raw = migrationAdapterFactory(url);
  /** @type {Array<{ dispose(): Promise<void> }>} */
  const opened = [];
  const tracking = {
    provider: raw.provider,
    adapterName: raw.adapterName,
    connect: async () => track(await raw.connect()),
    connectToShadowDb: async () => track(await raw.connectToShadowDb()),
  };
  /** @template {{ dispose(): Promise<void> }} A @param {A} adapter @returns {A} */
  function track(adapter) {
    let disposed = false;
    const dispose = adapter.dispose.bind(adapter);
    adapter.dispose = async () => {
      if (disposed) return;
      disposed = true;
      await dispose();
    };
    opened.push(adapter);
    return adapter;
  }
  const factory = bindMigrationAwareSqlAdapterFactory(tracking);
  const debug = process.env.FLEXY_SCHEMA_ENGINE_DEBUG ? (/** @type {string} */ line) => process.stderr.write(`${line}\n`) : () => {};
  const runtime = loadEngineRuntime();
  const files = schemaFiles(provider);
  /** @type {import('@prisma/schema-engine-wasm').SchemaEngine | undefined} */
  let engine;
  try {
    engine = await runtime.SchemaEngine.new({ datamodels: files.map((f) => [f.path, f.content]) }, debug, factory);
    return await fn(engine, provider);
  } catch (error) {
    throw explainEngineError(error, factory);
  } finally {
    engine?.free();
    await Promise.allSettled(opened.map((adapter) => adapter.dispose()));
  }
}

/** Engine errors say "External error id#N"; the driver's own error is kept in the registry. */
function explainEngineError(/** @type {any} */ error, /** @type {any} */ factory) {
  const registered = factory.errorRegistry?.registeredErrors ?? [];
  const message = String(error?.message ?? error);
  const driverErrors = registered.map((/** @type {any} */ entry) => String(entry?.error?.message ?? entry?.error ?? entry));
  const wrapped = new Error(driverErrors.length ? `${message}\nDriver error: ${driverErrors.join('\n')}` : message);
  /** @type {any} */ (wrapped).code = error?.code;
  return wrapped;
}

/** A diff script that changes nothing comes back as this comment. @param {string | null} script */
function isEmptyScript(script) {
  return !script || script.replace(/--.*$/gm, '').trim() === '';
}

/**
 * Applies pending migrations from prisma/migrations/<provider> to `url`, recording them in
 * `_prisma_migrations` exactly as `prisma migrate deploy` does.
 * @param {string} url
 */
async function applyMigrations(url) {
  const provider = providerOf(url);
  const migrationsList = readMigrationsList(provider);
  if (migrationsList.migrationDirectories.length === 0) throw new Error(`no migrations in ${migrationsList.baseDir}`);

  // Nothing pending is the usual case at start-up. Deciding it from the bookkeeping table spares
  // loading the engine, and on SQLite the engine's exclusive lock, which would wait for every
  // other process that has the file open.
  const upToDate = await upToDateReport(url, provider, migrationsList);
  if (upToDate) return upToDate;
  if (provider === 'sqlite') {
    // The engine's SQLite connection runs in exclusive locking mode; engines from several
    // processes starting together would each keep a shared lock and wait on one another.
    // One at a time, and whoever follows finds the work done.
    return withSqliteMigrationLock(sqliteFilePath(url), async () => {
      return (await upToDateReport(url, provider, migrationsList)) ?? (await applyWithEngine(url, provider, migrationsList));
    });
  }
  return applyWithEngine(url, provider, migrationsList);
}

/**
 * The report for a database whose bookkeeping already lists every migration on disk, without
 * starting the engine; null when something is pending, failed, or not set up yet.
 * @param {string} url @param {Provider} provider @param {ReturnType<typeof readMigrationsList>} migrationsList
 */
async function upToDateReport(url, provider, migrationsList) {
  const recorded = await readMigrationBookkeeping(url);
  if (!recorded || recorded.some((row) => row.failed)) return null;
  const applied = new Map(recorded.map((row) => [row.name, row.checksum]));
  const onDisk = migrationsList.migrationDirectories;
  if (!onDisk.every((dir) => applied.has(dir.path))) return null;
  return {
    provider,
    applied: [],
    edited: onDisk
      .filter((dir) => dir.migrationFile.content.tag !== 'ok' || !checksumMatches(dir.migrationFile.content.value, applied.get(dir.path)))
      .map((dir) => dir.path),
    unknown: [...applied.keys()].filter((name) => !onDisk.some((dir) => dir.path === name)),
  };
}

/**
 * Runs `fn` holding an exclusive lock on `<file>.migrate-lock`, a SQLite file used only as a
 * cross-process mutex: the operating system drops the lock if the holder dies.
 * @template T @param {string} file @param {() => Promise<T>} fn @returns {Promise<T>}
 */
async function withSqliteMigrationLock(file, fn) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const Database = require('better-sqlite3');
  const lock = new Database(`${file}.migrate-lock`, { timeout: SQLITE_MIGRATION_LOCK_TIMEOUT_MS });
  try {
    lock.exec('BEGIN EXCLUSIVE');
    try {
      return await fn();
    } finally {
      lock.exec('COMMIT');
    }
  } finally {
    lock.close();
  }
}

/** @param {string} url @param {Provider} provider @param {ReturnType<typeof readMigrationsList>} migrationsList */
async function applyWithEngine(url, provider, migrationsList) {
  let result;
  try {
    result = await withSchemaEngine(url, async (engine) => {
      const { appliedMigrationNames } = await engine.applyMigrations({ migrationsList, filters: NO_FILTERS });
      const diagnosis = await engine.diagnoseMigrationHistory({ migrationsList, optInToShadowDatabase: false, filters: NO_FILTERS });
      const history = diagnosis.history;
      return {
        provider,
        applied: appliedMigrationNames,
        // Applied migrations whose migration.sql was edited afterwards.
        edited: diagnosis.editedMigrationNames,
        // Applied to the database but absent from this checkout (the database is newer than the code).
        unknown: history && 'unpersistedMigrationNames' in history ? history.unpersistedMigrationNames : [],
      };
    });
  } catch (error) {
    const message = String(/** @type {Error} */ (error).message);
    if (provider === 'sqlite' && /SocketTimeout|SQLITE_BUSY|database is locked/i.test(message)) {
      throw new Error(
        `${sqliteFilePath(url)} is in use by another process. Pending migrations need the file to themselves: ` +
          `stop the gateway and supervisors, run npm run db:migrate, then start them again.\n${message}`,
      );
    }
    throw error;
  }
  if (provider === 'sqlite') enableWal(sqliteFilePath(url));
  return result;
}

/**
 * The rows of `_prisma_migrations` that count: finished and not rolled back, plus whether any
 * migration failed half-way. null when there is no such table (or no database file) yet.
 * @param {string} url
 * @returns {Promise<Array<{ name: string, checksum: string, failed: boolean }> | null>}
 */
async function readMigrationBookkeeping(url) {
  const sql = 'SELECT migration_name, checksum, finished_at IS NOT NULL AS finished, rolled_back_at IS NOT NULL AS rolled_back FROM _prisma_migrations';
  /** @type {unknown[][]} */
  let rows;
  if (providerOf(url) === 'sqlite') {
    const file = sqliteFilePath(url);
    if (file === ':memory:' || !fs.existsSync(file)) return null;
    const Database = require('better-sqlite3');
    const db = new Database(file, { readonly: true, timeout: SQLITE_MIGRATION_LOCK_TIMEOUT_MS });
    try {
      const exists = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_prisma_migrations'").get();
      if (!exists) return null;
      rows = db.prepare(sql).raw().all();
    } finally {
      db.close();
    }
  } else {
    const { PrismaPg } = require('@prisma/adapter-pg');
    const adapter = await new PrismaPg({ connectionString: url }).connect();
    try {
      const table = await adapter.queryRaw({ sql: "SELECT to_regclass('_prisma_migrations') IS NOT NULL", args: [], argTypes: [] });
      if (!table.rows[0]?.[0]) return null;
      rows = (await adapter.queryRaw({ sql, args: [], argTypes: [] })).rows;
    } finally {
      await adapter.dispose();
    }
  }
  return rows
    .filter((row) => !truthy(row[3]))
    .map((row) => ({ name: String(row[0]), checksum: String(row[1]), failed: !truthy(row[2]) }));
}

/** SQLite gives 0/1, PostgreSQL booleans. @param {unknown} value */
function truthy(value) {
  return value === true || value === 1 || value === 1n;
}

/** As the engine checks it: SHA-256 of the script, accepting either line ending. @param {string} script @param {string | undefined} checksum */
function checksumMatches(script, checksum) {
  const sha = (/** @type {string} */ text) => createHash('sha256').update(text).digest('hex');
  const lf = script.replace(/\r\n/g, '\n');
  return [script, lf, lf.replace(/\n/g, '\r\n')].some((variant) => sha(variant) === checksum);
}

/** WAL lets readers and one writer from several processes share the file; the mode persists in it. */
function enableWal(/** @type {string} */ file) {
  if (file === ':memory:') return;
  const Database = require('better-sqlite3');
  const db = new Database(file, { timeout: SQLITE_MIGRATION_LOCK_TIMEOUT_MS });
  try {
    db.pragma('journal_mode = WAL');
  } finally {
    db.close();
  }
}

/**
 * SQL that would bring the live database at `url` to schema.prisma; '' when they match.
 * @param {string} url
 */
async function diffDatabaseToSchema(url) {
  const script = await withSchemaEngine(url, async (engine, provider) => {
    const files = schemaFiles(provider);
    const { stdout } = await engine.diff({
      from: { tag: 'schemaDatasource', files, configDir: PRISMA_DIR },
      to: { tag: 'schemaDatamodel', files },
      script: true,
      exitCode: null,
      filters: NO_FILTERS,
    });
    return stdout;
  });
  return isEmptyScript(script) ? '' : /** @type {string} */ (script);
}

/**
 * SQL that takes a database built from the committed migrations to schema.prisma; '' when the
 * migrations are complete. Replays them on a shadow database: for SQLite in memory, for
 * PostgreSQL a throwaway database on the server at `serverUrl` (needs CREATE DATABASE).
 * @param {Provider} provider
 * @param {string} [serverUrl]
 */
async function diffMigrationsToSchema(provider, serverUrl) {
  const url = provider === 'sqlite' ? 'file::memory:' : serverUrl;
  if (!url) throw new Error('a PostgreSQL server URL is needed to replay the PostgreSQL migrations');
  const migrationsList = readMigrationsList(provider);
  const script = await withSchemaEngine(url, async (engine) => {
    const { stdout } = await engine.diff({
      from: migrationsList.migrationDirectories.length ? { tag: 'migrations', ...migrationsList } : { tag: 'empty' },
      to: { tag: 'schemaDatamodel', files: schemaFiles(provider) },
      script: true,
      exitCode: null,
      filters: NO_FILTERS,
    });
    return stdout;
  });
  return isEmptyScript(script) ? '' : /** @type {string} */ (script);
}

/** The engine's view of `url` against the migrations folder, without changing anything. @param {string} url */
async function migrationStatus(url) {
  const provider = providerOf(url);
  const migrationsList = readMigrationsList(provider);
  return withSchemaEngine(url, (engine) =>
    engine.diagnoseMigrationHistory({ migrationsList, optInToShadowDatabase: false, filters: NO_FILTERS }),
  );
}

/** Prisma's migration folder name: UTC yyyyMMddHHmmss_name. @param {string} name */
function migrationFolderName(name, now = new Date()) {
  const slug = name.trim().toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '');
  if (!slug) throw new Error('a migration needs a name, e.g. add_generation_tags');
  const stamp = now.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `${stamp}_${slug}`;
}

/** @param {Provider} provider @param {string} folder @param {string} script */
function writeMigration(provider, folder, script) {
  const baseDir = MIGRATIONS_DIRS[provider];
  fs.mkdirSync(path.join(baseDir, folder), { recursive: true });
  fs.writeFileSync(path.join(baseDir, folder, 'migration.sql'), script);
  const lockPath = path.join(baseDir, 'migration_lock.toml');
  if (!fs.existsSync(lockPath)) {
    fs.writeFileSync(
      lockPath,
      `# Please do not edit this file manually\n# It should be added in your version-control system (e.g., Git)\nprovider = "${provider}"\n`,
    );
  }
  return path.join(baseDir, folder, 'migration.sql');
}

/** Entry point for the worker thread libs/persistence uses. */
const operations = { applyMigrations, diffDatabaseToSchema, diffMigrationsToSchema, migrationStatus };

module.exports = {
  PRISMA_DIR,
  REPO_ROOT,
  SCHEMA_PATH,
  GENERATED_DIR,
  DERIVED_POSTGRES_SCHEMA_PATH,
  MIGRATIONS_DIRS,
  PROVIDERS,
  SQLITE_BUSY_TIMEOUT_MS,
  defaultDatabaseUrl,
  resolveDatabaseUrl,
  providerOf,
  redactUrl,
  sqliteFilePath,
  derivePostgresSchema,
  readSchema,
  readMigrationsList,
  migrationFolderName,
  writeMigration,
  withSchemaEngine,
  operations,
  ...operations,
};
