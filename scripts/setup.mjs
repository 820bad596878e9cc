// Brings a fresh machine (or a stale checkout) to a runnable state. Each step is skipped while its
// inputs are unchanged, so `npm start` and `npm test` pay for it once.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DATA_DIR, ROOT, fileHash, log, run, stamped, which } from './lib.mjs';

const UV_VERSION = '0.13.8';
const PY = join(ROOT, 'worker-python');
export const WORKER_PYTHON = join(PY, '.venv/bin/python');

function nodeDependencies() {
  stamped('npm', fileHash(join(ROOT, 'package-lock.json')), () => {
    log('installing Node dependencies (npm ci)');
    run('npm', ['ci', '--no-audit', '--no-fund']);
  });
}

function aptInstall(packages) {
  log(`installing ${packages.join(', ')} from Debian`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // As root (CI, containers) apt-get runs directly; elsewhere through sudo.
  const apt = (args) => (process.getuid?.() === 0 ? run('apt-get', args, { env }) : run('sudo', ['apt-get', ...args], { env }));
  apt(['update', '-qq']);
  apt(['install', '-y', '-qq', '--no-install-recommends', ...packages]);
}

export function systemPackages({ browser = false } = {}) {
  const missing = [];
  if (!which('redis-server')) missing.push('redis-server');
  if (browser && !which('chromium')) missing.push('chromium');
  if (missing.length) aptInstall(missing);
}

function pythonEnvironment() {
  stamped('uv-sync', fileHash(join(PY, 'uv.lock'), join(PY, 'pyproject.toml')), () => {
    try {
      run('python3', ['-m', 'uv', '--version'], { stdio: 'ignore' });
    } catch {
      log(`installing uv ${UV_VERSION}`);
      run('python3', ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', `uv==${UV_VERSION}`]);
    }
    log('creating the pinned Python environment (uv sync --frozen)');
    run('python3', ['-m', 'uv', 'sync', '--frozen', '--project', PY], { env: { ...process.env, UV_PYTHON_DOWNLOADS: 'never' } });
  });
}

function build() {
  log('compiling TypeScript (swc)');
  run('node', [join(ROOT, 'scripts/build.mjs')]);
}

function database() {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  if (pkg.scripts['db:generate']) {
    stamped('prisma-generate', fileHash(join(ROOT, 'prisma/schema.prisma'), join(ROOT, 'package-lock.json')), () =>
      run('npm', ['run', '--silent', 'db:generate']),
    );
  }
}

export function migrate(env = process.env) {
  run('npm', ['run', '--silent', 'db:migrate'], { env });
}

/**
 * `names` (all when null) validated by the service's schema (libs/config); a bad one ends the process
 * with its message. Reads the build, so it runs after build().
 */
export function validatedSettings(program, names, env = process.env) {
  const config = createRequire(import.meta.url)(join(ROOT, 'dist/libs/config/src/index.js'));
  return config.orExitOnBadConfig(program, () => (names ? config.parseSomeSettings(env, names) : config.parseSettings(env)));
}

export function demoSnapshots(modelsDir) {
  if (!validatedSettings('setup', ['DEMO_SNAPSHOTS']).DEMO_SNAPSHOTS) return;
  stamped(`demo-snapshots-${createHash('sha256').update(modelsDir).digest('hex').slice(0, 8)}`, fileHash(join(PY, 'flexy_worker/demo_snapshots.py'), join(PY, 'uv.lock')), () => {
    log(`building demo snapshots (tiny random weights) in ${modelsDir}`);
    run(WORKER_PYTHON, ['-m', 'flexy_worker.demo_snapshots', '--out', modelsDir], { cwd: PY });
  });
}

export function setup(options = {}) {
  nodeDependencies();
  systemPackages(options);
  pythonEnvironment();
  database();
  build();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  setup();
  migrate();
  demoSnapshots(process.env.MODELS_DIR || join(DATA_DIR, 'models'));
  log('set-up complete');
}
