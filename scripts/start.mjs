// `npm start`: sets up, then runs the whole service on its embedded defaults — a private Redis, a
// SQLite file, demo snapshots when no weights were pulled, the CPU when there is no GPU — and stops
// everything it started on Ctrl-C or SIGTERM, whether the signal reaches this process, its process
// group, or only npm above it.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DATA_DIR, ROOT, freePort, log, spawnChild, waitForHttp } from './lib.mjs';
import { demoSnapshots, migrate, setup, validatedSettings } from './setup.mjs';

const children = [];
let stopping = false;

/** The supervisor's grace period (SUPERVISOR_GRACE_MS) and its own stop limit after it (main.ts), plus a margin. */
const supervisorGraceMs = () => (Number(process.env.SUPERVISOR_GRACE_MS) || 20_000) + 25_000;
const STOP_GRACE_MS = { gateway: 10_000, redis: 10_000 };

async function stopAll(code) {
  if (stopping) return;
  stopping = true;
  log('stopping');
  // Gateway first (no new requests), then the supervisor (it finishes or puts back the running job,
  // which needs Redis), Redis last. A group signal (Ctrl-C) reached the gateway and the supervisor
  // already; SIGTERM again is harmless to them. Redis and the Python worker sit in process groups of
  // their own, so only this orderly stop ends them.
  for (const child of [...children].reverse()) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    child.kill('SIGTERM');
    await new Promise((resolve) => {
      const timer = setTimeout(() => {
        log(`${child.serviceName} did not stop within ${child.stopGraceMs} ms; killing it`);
        child.kill('SIGKILL');
      }, child.stopGraceMs);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  process.exit(code);
}

/**
 * npm does not pass its own SIGTERM on to this script: it signals the `sh -c` between them, which dies
 * without forwarding it, and this process would serve on as an orphan. So when npm started it, losing
 * the shell or npm above it is a stop signal too.
 */
function stopWhenNpmGoes() {
  if (!process.env.npm_lifecycle_event) return;
  const parent = process.ppid;
  const grandparent = parentOf(parent);
  const alive = (pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const timer = setInterval(() => {
    if (process.ppid !== parent || (grandparent && !alive(grandparent))) {
      clearInterval(timer);
      log('npm stopped; stopping the service');
      void stopAll(0);
    }
  }, 250);
  timer.unref();
}

function parentOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) || null;
  } catch {
    return null; // no /proc: the direct parent is watched alone
  }
}

function watch(name, child, stopGraceMs) {
  child.serviceName = name;
  child.stopGraceMs = stopGraceMs;
  children.push(child);
  child.on('exit', (code, signal) => {
    if (!stopping) {
      log(`${name} exited unexpectedly (${signal ?? code}); shutting down`);
      void stopAll(1);
    }
  });
  return child;
}

async function main() {
  // Last resort if this script dies some other way: Redis is in a group of its own and would live on.
  process.on('exit', () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  });
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  process.on('SIGHUP', () => void stopAll(0));
  stopWhenNpmGoes();
  setup();
  const env = { ...process.env, DATA_DIR };
  env.MODELS_DIR ||= join(DATA_DIR, 'models');
  env.PORT ||= '3000';
  env.HOST ||= '127.0.0.1';
  // Every setting is checked here, so a bad one stops `npm start` with its message before anything runs.
  validatedSettings('npm start', null, env);
  migrate(env);
  demoSnapshots(env.MODELS_DIR);

  if (!env.REDIS_URL) {
    const port = await freePort();
    const dir = join(DATA_DIR, 'redis');
    mkdirSync(dir, { recursive: true });
    // Its own process group: a Ctrl-C must not stop Redis while the supervisor still puts its job back.
    watch('redis', spawnChild('redis', 'redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
      '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--maxmemory-policy', 'noeviction',
    ], { detached: true }), STOP_GRACE_MS.redis);
    env.REDIS_URL = `redis://127.0.0.1:${port}`;
  }
  const supervisor = watch('supervisor', spawnChild('supervisor', process.execPath, [join(ROOT, 'dist/apps/supervisor/src/main.js')], { env }), supervisorGraceMs());
  const gateway = watch('gateway', spawnChild('gateway', process.execPath, [join(ROOT, 'dist/apps/gateway/src/main.js')], { env }), STOP_GRACE_MS.gateway);
  const url = `http://${env.HOST === '0.0.0.0' ? '127.0.0.1' : env.HOST}:${env.PORT}`;
  await waitForHttp(`${url}/health/live`, 60_000, () => gateway.exitCode === null && supervisor.exitCode === null);
  log(`ready: ${url}  (API docs ${url}/docs)`);
  log(`models: ${env.MODELS_DIR}; demo snapshots hold tiny random weights, so their images are noise`);
}

main().catch((err) => {
  log(`start failed: ${err.message}`);
  void stopAll(1);
});
