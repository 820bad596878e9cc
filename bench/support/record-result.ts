import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../../test/support/stack';

/**
 * Stamps a benchmark result with the machine, date and command, then writes it to
 * bench/results/<name>.json (the latest) and appends it to <name>.jsonl (every run, never rewritten).
 */
export function recordResult(name: string, result: Record<string, unknown>, command: string): void {
  const stamped = { ...result, machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`, date: new Date().toISOString(), command };
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.json`), JSON.stringify(stamped, null, 2) + '\n');
  appendFileSync(join(dir, `${name}.jsonl`), JSON.stringify(stamped) + '\n');
  console.log(JSON.stringify(stamped, null, 2));
}
