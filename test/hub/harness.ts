/**
 * Runs the models CLI as its own process, compiled from the sources the way the build compiles it,
 * against the fake hub.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ROOT = join(__dirname, '..', '..');
const OUT = join(ROOT, 'test-artifacts', 'hub-cli');
export const CLI = join(OUT, 'libs', 'hub', 'src', 'cli.js');

/** Compiles libs/hub and what it imports (engines, config) with swc into test-artifacts (inside the repo, so node_modules resolves). */
export function buildCli(): void {
  rmSync(OUT, { recursive: true, force: true });
  execFileSync(
    join(ROOT, 'node_modules', '.bin', 'swc'),
    ['libs/hub/src', 'libs/engines/src', 'libs/config/src', '-d', OUT, '--ignore', '**/*.spec.ts', '-q'],
    { cwd: ROOT, stdio: 'pipe' },
  );
  if (!existsSync(CLI)) throw new Error(`swc did not produce ${CLI}`);
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Environment without anything of the caller's that would change the CLI's behaviour. */
export function cliEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C.UTF-8' };
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

export function startCli(args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; done: Promise<CliRun> } {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<CliRun>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}

export function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<CliRun> {
  return startCli(args, env).done;
}

export function tempModelsDir(): string {
  return mkdtempSync(join(tmpdir(), 'flexy-models-'));
}

export const fileSha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

export async function waitFor<T>(probe: () => T | undefined | false, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
