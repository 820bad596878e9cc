import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONFIG_ERROR_EXIT_CODE, REPO_ROOT } from '@flexy/config';

jest.setTimeout(180_000);

const PROGRAMS = {
  gateway: join(REPO_ROOT, 'dist/apps/gateway/src/main.js'),
  supervisor: join(REPO_ROOT, 'dist/apps/supervisor/src/main.js'),
};

interface Ended {
  code: number | null;
  output: string;
}

/** Starts a program of the build and waits (with a deadline) for it to end by itself. */
function runUntilExit(program: string, env: NodeJS.ProcessEnv, deadlineMs = 60_000): Promise<Ended> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [program], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${program} still running after ${deadlineMs} ms; output:\n${output}`));
    }, deadlineMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

// Each row: the bad settings, and what the start-up error must say. Nothing else runs (no Redis, no
// database): a process that got past its configuration would hang or fail differently.
const BAD_SETTINGS: Array<[string, NodeJS.ProcessEnv, string]> = [
  ['a fractional heartbeat timeout', { WORKER_HEARTBEAT_TIMEOUT_MS: '2.5' }, 'WORKER_HEARTBEAT_TIMEOUT_MS must be an integer from 1000 to 3600000 (milliseconds), got "2.5"'],
  ['a negative lock duration', { QUEUE_LOCK_DURATION_MS: '-1' }, 'QUEUE_LOCK_DURATION_MS must be an integer from 1000 to 3600000 (milliseconds), got "-1"'],
  ['a port that is text', { PORT: 'eighty' }, 'PORT must be an integer from 1 to 65535, got "eighty"'],
  ['an unknown auth mode', { AUTH_MODE: 'anonymous' }, 'AUTH_MODE must be one of open, keys, got "anonymous"'],
  ['open access on a public interface', { HOST: '0.0.0.0', AUTH_MODE: 'open' }, 'AUTH_MODE=open is only allowed on a loopback HOST'],
  ['the development webhook secret on a public interface', { HOST: '0.0.0.0' }, 'WEBHOOK_SECRET must be set to at least 32 bytes off loopback (HOST is 0.0.0.0)'],
  ['a body limit written with a unit', { MAX_BODY_BYTES: '64mb' }, 'MAX_BODY_BYTES must be an integer from 1048576 to 1073741824 (bytes), got "64mb"'],
  ['a Redis address without its scheme', { REDIS_URL: '127.0.0.1:6379' }, 'REDIS_URL must be a URL starting with redis:// or rediss://, or redis-sentinel://host:port,host:port,…/<master name>, got "127.0.0.1:6379"'],
  ['an unsupported database', { DATABASE_URL: 'mysql://db/flexy' }, 'DATABASE_URL must be a URL starting with file: or postgres:// or postgresql://'],
  ['an engine that does not exist', { WORKER_PRELOAD: 'flux1_dev,flux9' }, 'WORKER_PRELOAD must be a comma-separated list of engine ids'],
  ['a timeout below the heartbeat interval', { WORKER_HEARTBEAT_INTERVAL_MS: '5000', WORKER_HEARTBEAT_TIMEOUT_MS: '4000' }, 'WORKER_HEARTBEAT_TIMEOUT_MS (4000) must exceed WORKER_HEARTBEAT_INTERVAL_MS (5000)'],
  ['a zero memory budget', { WORKER_VRAM_BUDGET_GB: '0' }, 'WORKER_VRAM_BUDGET_GB must be a number > 0 and ≤ 4096 (GiB), got "0"'],
  ['an unknown text encoder placement', { FLUX2_TEXT_ENCODER: 'cloud' }, 'FLUX2_TEXT_ENCODER must be one of auto, local, remote, got "cloud"'],
  ['the same password for both dashboard users', { ADMIN_PASSWORD: 'a-long-password', ADMIN_READONLY_PASSWORD: 'a-long-password' }, 'ADMIN_READONLY_PASSWORD must differ from ADMIN_PASSWORD'],
];

let dataDir: string;
beforeAll(() => {
  dataDir = mkdtempSync(join(tmpdir(), 'flexy-bad-settings-'));
});
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

/** The caller's environment less every setting, so only the row's settings apply. */
function envWith(settings: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, DATA_DIR: dataDir, REDIS_URL: 'redis://127.0.0.1:1', ...settings };
}

describe.each(Object.entries(PROGRAMS))('the %s refuses to start on a bad setting', (name, program) => {
  it.each(BAD_SETTINGS)('%s', async (_what, settings, message) => {
    const ended = await runUntilExit(program, envWith(settings));
    expect(ended.code).toBe(CONFIG_ERROR_EXIT_CODE);
    expect(ended.output).toContain(`${name}: invalid configuration`);
    expect(ended.output).toContain(message);
    expect(ended.output).not.toMatch(/^\s+at /m); // a message, not a stack trace
  });
});
