import { readdirSync, readFileSync } from 'node:fs';
import { manage, MODELS_DIR, ROOT, type ManagedProcess } from './stack';

/**
 * `npm start` as an operator runs it, on a data folder of its own. Every process it starts inherits
 * FLEXY_TEST_MARKER=<data folder>, so a test can find all of them in /proc, whoever their parent is
 * by then.
 */
export function startNpmService(dataDir: string, port: number, extraEnv: NodeJS.ProcessEnv = {}): ManagedProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, MODELS_DIR, PORT: String(port), FLEXY_TEST_MARKER: dataDir, ...extraEnv };
  // The embedded defaults: its own Redis and SQLite under the data folder.
  delete env.REDIS_URL;
  delete env.DATABASE_URL;
  // A process group of its own, as in a terminal, so that a test can signal the group.
  return manage('npm-start', 'npm', ['start'], env, ROOT, { ownProcessGroup: true });
}

/** The PIDs of every process that `startNpmService(dataDir, …)` started, directly or not, still alive. */
export function npmServiceProcesses(dataDir: string): number[] {
  const marker = `FLEXY_TEST_MARKER=${dataDir}`;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(marker)) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}
