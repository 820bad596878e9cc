// Brings a fresh machine (or a stale checkout) to a runnable state. Each step is skipped while its
// inputs are unchanged, so `npm start` and `npm test` pay for it once.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
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

export function systemPackages({ browser = false, contract = false } = {}) {
  const missing = [];
  // Debian's redis-server also runs the fault suite's Sentinels (`redis-server <conf> --sentinel`).
  if (!which('redis-server')) missing.push('redis-server');
  if (browser && !which('chromium')) missing.push('chromium');
  // The contract run brings up its own loopback in a network namespace (ip, from iproute2).
  if (contract && !which('ip')) missing.push('iproute2');
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

export const CONTRACT_VENV = join(ROOT, '.data/tools/contract-venv');
const CONTRACT_REQUIREMENTS = join(ROOT, 'test/contract/requirements.txt');

/** Schemathesis for the contract tests, in its own virtual environment (pinned, like the worker's). */
function contractTools() {
  stamped('contract-tools', fileHash(CONTRACT_REQUIREMENTS), () => {
    log('installing the contract tester (Schemathesis) into .data/tools/contract-venv');
    rmSync(CONTRACT_VENV, { recursive: true, force: true });
    mkdirSync(dirname(CONTRACT_VENV), { recursive: true });
    run('python3', ['-m', 'venv', CONTRACT_VENV]);
    run(join(CONTRACT_VENV, 'bin/pip'), ['install', '--disable-pip-version-check', '-q', '-r', CONTRACT_REQUIREMENTS]);
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
  if (options.contract) contractTools();
  database();
  build();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  setup();
  migrate();
  demoSnapshots(process.env.MODELS_DIR || join(DATA_DIR, 'models'));
  log('set-up complete');
}
