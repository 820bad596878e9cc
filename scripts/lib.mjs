// Helpers for the set-up, start and test scripts. Node built-ins only: these run before `npm ci`.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const DATA_DIR = process.env.DATA_DIR || join(ROOT, '.data');

export function log(message) {
  process.stdout.write(`[flexyface] ${message}\n`);
}

/** Runs a command with inherited output; throws on failure. */
export function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: ROOT, ...options });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}`);
}

export function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

export function fileHash(...paths) {
  const h = createHash('sha256');
  for (const p of paths) h.update(existsSync(p) ? readFileSync(p) : Buffer.alloc(0));
  return h.digest('hex');
}

/** A step that is skipped while its inputs are unchanged since it last succeeded. */
export function stamped(name, inputsHash, step) {
  // Beside the checkout, not under DATA_DIR: set-up state belongs to the checkout, not to one data folder.
  const dir = join(ROOT, '.data/stamps');
  const file = join(dir, name);
  if (existsSync(file) && readFileSync(file, 'utf8') === inputsHash) return false;
  step();
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, inputsHash);
  return true;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function spawnChild(name, cmd, args, options = {}) {
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], ...options });
  const prefix = (line) => `[${name}] ${line}\n`;
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream.on('data', (chunk) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop();
      for (const line of lines) if (line) process.stdout.write(prefix(line));
    });
  }
  return child;
}

export async function waitForHttp(url, timeoutMs, isAlive = () => true) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new Error(`process behind ${url} exited`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms`);
}
