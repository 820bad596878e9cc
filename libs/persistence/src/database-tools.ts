import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';

export type DatabaseProvider = 'sqlite' | 'postgresql';

/** The parts of prisma/tools/db-core.cjs this library calls in process (none of them load the engine). */
interface DbCore {
  PRISMA_DIR: string;
  SQLITE_BUSY_TIMEOUT_MS: number;
  resolveDatabaseUrl(env?: NodeJS.ProcessEnv): string;
  providerOf(url: string): DatabaseProvider;
  redactUrl(url: string): string;
  sqliteFilePath(url: string): string;
}

/**
 * prisma/ is found by walking up from here, so this works from src/ (tests) and dist/ (built)
 * alike; the schema and migrations are read from it at run time.
 */
function findPrismaDir(): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'prisma', 'tools', 'db-core.cjs'))) return join(dir, 'prisma');
    if (dirname(dir) === dir) throw new Error(`prisma/tools/db-core.cjs not found above ${__dirname}`);
  }
}

let core: DbCore | undefined;

/** The shared tooling module; one implementation serves the npm scripts and the library. */
export function dbCore(): DbCore {
  // A runtime path, so the compiler leaves the plain-JS tooling where it is.
  core ??= require(join(findPrismaDir(), 'tools', 'db-core.cjs')) as DbCore;
  return core;
}

/** DATABASE_URL, or the embedded SQLite file `file:<DATA_DIR or repo/.data>/flexyface.db`. */
export function resolveDatabaseUrl(env: NodeJS.ProcessEnv = process.env): string {
  return dbCore().resolveDatabaseUrl(env);
}

/** `file:` → sqlite, `postgres://` / `postgresql://` → postgresql; anything else throws. */
export function databaseProvider(url: string): DatabaseProvider {
  return dbCore().providerOf(url);
}

/**
 * Runs one schema-engine operation in a worker thread. The engine is WebAssembly whose memory
 * never shrinks, and it holds SQLite in exclusive locking mode while connected; a short-lived
 * thread gives both back as soon as the operation ends.
 */
export function runSchemaEngine<T>(op: string, args: unknown[]): Promise<T> {
  const script = join(findPrismaDir(), 'tools', 'engine-thread.cjs');
  return new Promise<T>((resolve, reject) => {
    const worker = new Worker(script, { workerData: { op, args } });
    let answer: { ok: true; value: T } | { ok: false; message: string; code?: string } | undefined;
    let failure: Error | undefined;
    worker.once('message', (message: typeof answer) => {
      answer = message;
      // The engine leaves a timer behind that would keep the thread alive for seconds more;
      // everything it opened is closed by the time it answers.
      void worker.terminate();
    });
    worker.once('error', (error) => (failure = error));
    // Settle on exit, once the thread's database handles are closed.
    worker.once('exit', (code) => {
      if (answer?.ok) resolve(answer.value);
      else if (answer) reject(Object.assign(new Error(answer.message), { code: answer.code }));
      else reject(failure ?? new Error(`schema engine thread exited with code ${code} before answering`));
    });
  });
}
