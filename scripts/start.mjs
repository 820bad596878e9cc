// `npm start`: sets up, then runs the whole service on its embedded defaults — a private Redis, a
// SQLite file, demo snapshots when no weights were pulled, the CPU when there is no GPU — and stops
// everything it started on Ctrl-C or SIGTERM.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DATA_DIR, ROOT, freePort, log, spawnChild, waitForHttp } from './lib.mjs';
import { demoSnapshots, migrate, setup, validatedSettings } from './setup.mjs';

const children = [];
let stopping = false;

async function stopAll(code) {
  if (stopping) return;
  stopping = true;
  log('stopping');
  // Gateway first (no new requests), then supervisors (finish or requeue the running job), Redis last.
  for (const child of [...children].reverse()) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    child.kill('SIGTERM');
    await new Promise((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  process.exit(code);
}

function watch(name, child) {
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
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
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
    watch('redis', spawnChild('redis', 'redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
      '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--maxmemory-policy', 'noeviction',
    ]));
    env.REDIS_URL = `redis://127.0.0.1:${port}`;
  }
  const supervisor = watch('supervisor', spawnChild('supervisor', process.execPath, [join(ROOT, 'dist/apps/supervisor/src/main.js')], { env }));
  const gateway = watch('gateway', spawnChild('gateway', process.execPath, [join(ROOT, 'dist/apps/gateway/src/main.js')], { env }));
  const url = `http://${env.HOST === '0.0.0.0' ? '127.0.0.1' : env.HOST}:${env.PORT}`;
  await waitForHttp(`${url}/health/live`, 60_000, () => gateway.exitCode === null && supervisor.exitCode === null);
  log(`ready: ${url}  (API docs ${url}/docs)`);
  log(`models: ${env.MODELS_DIR}; demo snapshots hold tiny random weights, so their images are noise`);
}

main().catch((err) => {
  log(`start failed: ${err.message}`);
  void stopAll(1);
});
