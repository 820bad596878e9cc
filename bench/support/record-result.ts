import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../../test/support/stack';

/** The commit that ran, marked dirty when the code differs from it (results written since do not count). */
function commitStamp(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', '.', ':!bench/results'], { cwd: ROOT, encoding: 'utf8' });
    const dirty = status.trim() !== '';
    return dirty ? `${sha} (dirty)` : sha;
  } catch {
    return 'unknown';
  }
}

/** Taken when the benchmark starts (it imports this module): edits made while it runs are not what ran. */
const RUN_COMMIT = commitStamp();

function stamp(result: Record<string, unknown>, command: string) {
  return {
    ...result,
    machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`,
    // The machine is shared: its load when the run ended says how much of it the run had.
    load_avg_1m: Math.round(loadavg()[0] * 100) / 100,
    date: new Date().toISOString(),
    commit: RUN_COMMIT,
    command,
  };
}

function write(name: string, latest: unknown, rows: unknown[]): void {
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.json`), JSON.stringify(latest, null, 2) + '\n');
  appendFileSync(join(dir, `${name}.jsonl`), rows.map((r) => JSON.stringify(r) + '\n').join(''));
}

/**
 * Stamps a benchmark result with the machine, date, commit and command, then writes it to
 * bench/results/<name>.json (the latest) and appends it to <name>.jsonl (every run, never rewritten).
 */
export function recordResult(name: string, result: Record<string, unknown>, command: string): void {
  const stamped = stamp(result, command);
  write(name, stamped, [stamped]);
  console.log(JSON.stringify(stamped, null, 2));
}

/** The same for a run that measured several things: one stamped line each; <name>.json holds the run's rows. */
export function recordResults(name: string, results: Array<Record<string, unknown>>, command: string): void {
  const stamped = results.map((r) => stamp(r, command));
  write(name, stamped, stamped);
}
