import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '@flexy/config';

export const ROOT = REPO_ROOT;
export const MODELS_DIR = process.env.MODELS_DIR || join(ROOT, '.data/models');
const ARTIFACTS = join(ROOT, 'test-artifacts/logs');

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
  });
}

export interface ManagedProcess {
  name: string;
  child: ChildProcess;
  output: string[];
  waitFor(pattern: RegExp, timeoutMs: number): Promise<string>;
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns a process, keeps its output (also in test-artifacts/logs) and lets a test wait for a line. */
export function manage(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd = ROOT, options: { ownProcessGroup?: boolean } = {}): ManagedProcess {
  mkdirSync(ARTIFACTS, { recursive: true });
  const logFile = createWriteStream(join(ARTIFACTS, `${name}-${Date.now()}.log`));
  // ownProcessGroup: a test can then signal the whole group, as a terminal's Ctrl-C does.
  const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: options.ownProcessGroup ?? false });
  const output: string[] = [];
  const listeners = new Set<(line: string) => void>();
  for (const stream of [child.stdout!, child.stderr!]) {
    let rest = '';
    stream.on('data', (chunk: Buffer) => {
      logFile.write(chunk);
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop()!;
      for (const line of lines) {
        output.push(line);
        for (const l of listeners) l(line);
      }
    });
  }
  // 'close', not 'exit': by then every line the process wrote has been read (a test that checks the
  // output after the exit sees all of it).
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.on('close', (code, signal) => {
      logFile.end();
      res({ code, signal });
    }),
  );
  return {
    name,
    child,
    output,
    exited: () => exit,
    waitFor(pattern, timeoutMs) {
      const seen = output.find((l) => pattern.test(l));
      if (seen) return Promise.resolve(seen);
      return new Promise((res, rej) => {
        const timer = setTimeout(() => {
          listeners.delete(check);
          rej(new Error(`${name}: no line matching ${pattern} within ${timeoutMs} ms; last output:\n${output.slice(-30).join('\n')}`));
        }, timeoutMs);
        const check = (line: string) => {
          if (!pattern.test(line)) return;
          clearTimeout(timer);
          listeners.delete(check);
          res(line);
        };
        listeners.add(check);
        void exit.then(({ code, signal }) => {
          if (!listeners.has(check)) return;
          clearTimeout(timer);
          listeners.delete(check);
          rej(new Error(`${name} exited (${signal ?? code}) before printing ${pattern}:\n${output.slice(-30).join('\n')}`));
        });
      });
    },
  };
}

export async function stopProcess(p: ManagedProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 20_000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill(signal);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await p.exited();
  clearTimeout(timer);
}

export interface StackOptions {
  supervisors?: number;
  env?: NodeJS.ProcessEnv;
  /** Extra environment for the supervisors only (e.g. fault injection for their Python workers). */
  supervisorEnv?: NodeJS.ProcessEnv;
  /** How long a supervisor may take to report a ready worker (loading real-size engines takes minutes). */
  readyTimeoutMs?: number;
  /**
   * Runs once Redis is up, before the services start; what it returns is added to their environment
   * (a Sentinel setup around the stack's Redis answers its own REDIS_URL).
   */
  aroundRedis?: (redis: { port: number; dataDir: string }) => Promise<NodeJS.ProcessEnv>;
}

export interface Stack {
  url: string;
  redisUrl: string;
  redisPort: number;
  dataDir: string;
  env: NodeJS.ProcessEnv;
  redis: ManagedProcess;
  gateway: ManagedProcess;
  supervisors: ManagedProcess[];
  startSupervisor(extraEnv?: NodeJS.ProcessEnv): Promise<ManagedProcess>;
  stop(): Promise<void>;
}

let counter = 0;

/**
 * The real stack for a test file: a private redis-server, a fresh SQLite database, N supervisors
 * (each with its real Python worker on the demo snapshots) and the gateway, all from dist/.
 */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const dataDir = mkdtempSync(join(tmpdir(), 'flexy-stack-'));
  const redisPort = await freePort();
  const port = await freePort();
  const redis = manage(`redis-${redisPort}`, 'redis-server', [
    '--port', String(redisPort), '--bind', '127.0.0.1', '--dir', dataDir, '--save', '', '--appendonly', 'yes', '--maxmemory-policy', 'noeviction',
  ], process.env);
  await redis.waitFor(/Ready to accept connections/, 10_000);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATA_DIR: dataDir,
    MODELS_DIR,
    REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    DATABASE_URL: `file:${join(dataDir, 'flexyface.db')}`,
    PORT: String(port),
    HOST: '127.0.0.1',
    WORKER_DEVICES: 'cpu',
    ...options.env,
    ...(options.aroundRedis ? await options.aroundRedis({ port: redisPort, dataDir }) : {}),
  };
  const { applyMigrations } = await import('@flexy/persistence');
  await applyMigrations(env.DATABASE_URL!);

  const supervisors: ManagedProcess[] = [];
  const startSupervisor = async (extraEnv: NodeJS.ProcessEnv = {}) => {
    const sup = manage(`supervisor-${port}-${++counter}`, process.execPath, [join(ROOT, 'dist/apps/supervisor/src/main.js')], {
      ...env,
      ...options.supervisorEnv,
      ...extraEnv,
    });
    supervisors.push(sup);
    await sup.waitFor(/ready on/, options.readyTimeoutMs ?? 180_000);
    return sup;
  };
  const gateway = manage(`gateway-${port}`, process.execPath, [join(ROOT, 'dist/apps/gateway/src/main.js')], env);
  await Promise.all([
    gateway.waitFor(/listening on/, 60_000),
    ...Array.from({ length: options.supervisors ?? 1 }, () => startSupervisor()),
  ]);
  return {
    url: `http://127.0.0.1:${port}`,
    redisUrl: env.REDIS_URL!,
    redisPort,
    dataDir,
    env,
    redis,
    gateway,
    supervisors,
    startSupervisor,
    async stop() {
      await stopProcess(gateway);
      await Promise.all(supervisors.map((s) => stopProcess(s)));
      await stopProcess(redis);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function api<T = any>(stack: Stack, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(stack.url + path, {
    method,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: T | undefined;
  try {
    json = JSON.parse(text) as T;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json: json as T, text };
}

/** Polls a generation until it leaves queued/running. */
export async function waitForGeneration(stack: Stack, id: string, timeoutMs = 120_000, headers: Record<string, string> = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await api(stack, 'GET', `/v1/generations/${id}`, undefined, headers);
    if (r.status === 200 && !['queued', 'running'].includes(r.json.status)) return r.json;
    if (Date.now() > deadline) throw new Error(`generation ${id} still ${r.json?.status} after ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 100));
  }
}
