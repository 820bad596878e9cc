import { ConfigError, loadConfig, parseSomeSettings, SETTING_NAMES, settingDoc } from './index';

function problems(env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error(`accepted ${JSON.stringify(env)}`);
}

describe('configuration schema', () => {
  it('gives the embedded defaults on an empty environment', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      host: '127.0.0.1',
      port: 3000,
      gatewayProcesses: 1,
      redisUrl: 'redis://127.0.0.1:6379',
      workerDevices: 'auto',
      workerPreload: [],
      heartbeatIntervalMs: 2000,
      heartbeatTimeoutMs: 10_000,
      workerStallTimeoutMs: 120_000,
      syncWaitMs: 300_000,
      openAccess: true,
      webhookSecret: 'flexyface-dev-webhook-secret',
      webhookAllowPrivate: false,
      maxBodyBytes: 16 * 1024 * 1024,
      trustProxy: '',
      retentionDays: 30,
      sseMaxStreamsPerOwner: 16,
    });
    expect(config.databaseUrl).toBe(`file:${config.dataDir}/flexyface.db`);
    expect(config.imagesDir).toBe(`${config.dataDir}/images`);
  });

  it('reads valid values, blanks as unset', () => {
    const config = loadConfig({
      PORT: '8080',
      HOST: '0.0.0.0',
      AUTH_MODE: 'keys',
      GATEWAY_PROCESSES: ' 3 ',
      WORKER_PRELOAD: 'flux1_dev, realvis_xl',
      WORKER_HEARTBEAT_INTERVAL_MS: '500',
      WORKER_HEARTBEAT_TIMEOUT_MS: '3000',
      DATA_DIR: '/srv/flexy',
      IMAGES_DIR: '',
      WEBHOOK_SECRET: 'a'.repeat(32),
      WEBHOOK_ALLOW_PRIVATE: 'true',
    });
    expect(config).toMatchObject({
      port: 8080,
      openAccess: false,
      gatewayProcesses: 3,
      workerPreload: ['flux1_dev', 'realvis_xl'],
      heartbeatIntervalMs: 500,
      heartbeatTimeoutMs: 3000,
      imagesDir: '/srv/flexy/images',
      webhookAllowPrivate: true,
    });
    expect(loadConfig({ WEBHOOK_SECRET: '' }).webhookSecret).toBe('flexyface-dev-webhook-secret');
    expect(loadConfig({ HOST: '0.0.0.0', WEBHOOK_SECRET: 'é'.repeat(16) }).openAccess).toBe(false);
    expect(loadConfig({ HOST: '::1', AUTH_MODE: 'keys' }).openAccess).toBe(false);
    // Loopback Redis in any spelling keeps the development secret usable.
    expect(loadConfig({ REDIS_URL: 'redis://[::1]:6380/0', WEBHOOK_SECRET: 'short' }).webhookSecret).toBe('short');
  });

  // Each bad value, and the sentence that must name the variable and its rule.
  const BAD: Array<[NodeJS.ProcessEnv, string]> = [
    [{ WORKER_HEARTBEAT_TIMEOUT_MS: '2.5' }, 'WORKER_HEARTBEAT_TIMEOUT_MS must be an integer from 1000 to 3600000 (milliseconds), got "2.5"'],
    [{ WORKER_HEARTBEAT_TIMEOUT_MS: '-5000' }, 'WORKER_HEARTBEAT_TIMEOUT_MS must be an integer from 1000 to 3600000 (milliseconds), got "-5000"'],
    [{ WORKER_STALL_TIMEOUT_MS: '1e5' }, 'WORKER_STALL_TIMEOUT_MS must be an integer from 1000 to 86400000 (milliseconds), got "1e5"'],
    [{ SYNC_WAIT_MS: 'soon' }, 'SYNC_WAIT_MS must be an integer from 1000 to 3600000 (milliseconds), got "soon"'],
    [{ PORT: '70000' }, 'PORT must be an integer from 1 to 65535, got "70000"'],
    [{ PORT: '0x50' }, 'PORT must be an integer from 1 to 65535, got "0x50"'],
    [{ GATEWAY_PROCESSES: '0' }, 'GATEWAY_PROCESSES must be "auto" or an integer from 1 to 256, got "0"'],
    [{ AUTH_MODE: 'none' }, 'AUTH_MODE must be one of open, keys, got "none"'],
    [{ HOST: '0.0.0.0', AUTH_MODE: 'open', WEBHOOK_SECRET: 'a'.repeat(32) }, 'AUTH_MODE=open is only allowed on a loopback HOST (127.0.0.1, localhost, ::1), not 0.0.0.0'],
    [{ HOST: '0.0.0.0', WEBHOOK_SECRET: 'x'.repeat(31) }, 'WEBHOOK_SECRET must be set to at least 32 bytes off loopback (HOST is 0.0.0.0); e.g. openssl rand -hex 32'],
    [{ REDIS_URL: 'redis://redis.internal:6379' }, 'WEBHOOK_SECRET must be set to at least 32 bytes off loopback (REDIS_URL is on redis.internal); e.g. openssl rand -hex 32'],
    [{ WEBHOOK_ALLOW_PRIVATE: 'yes' }, 'WEBHOOK_ALLOW_PRIVATE must be "true" or "false", got "yes"'],
    [{ MAX_BODY_BYTES: '64mb' }, 'MAX_BODY_BYTES must be an integer from 1048576 to 1073741824 (bytes), got "64mb"'],
    [{ RETENTION_DAYS: '-1' }, 'RETENTION_DAYS must be an integer from 0 to 36500, got "-1"'],
    [{ SSE_MAX_STREAMS_PER_KEY: '0' }, 'SSE_MAX_STREAMS_PER_KEY must be an integer from 1 to 10000, got "0"'],
    [{ WORKER_DEVICE_MEMORY_GB: 'lots' }, 'WORKER_DEVICE_MEMORY_GB must be a number > 0 and ≤ 4096 (GiB), got "lots"'],
    [{ HOST: 'not a host' }, 'HOST must be an IP address or a host name, got "not a host"'],
    [{ REDIS_URL: 'localhost:6379' }, 'REDIS_URL must be a URL starting with redis:// or rediss://, or redis-sentinel://host:port,host:port,…/<master name>, got "localhost:6379"'],
    [{ DATABASE_URL: 'mysql://db/flexy' }, 'DATABASE_URL must be a URL starting with file: or postgres:// or postgresql://, got "mysql://db/flexy"'],
    [{ WORKER_DEVICES: 'gpu' }, 'WORKER_DEVICES must be auto, cpu, or a comma-separated list of GPU indices such as 0,1, where + joins GPUs into one worker (0+1,2+3), got "gpu"'],
    [{ WORKER_DEVICES: '0+' }, 'WORKER_DEVICES must be auto, cpu, or a comma-separated list of GPU indices such as 0,1, where + joins GPUs into one worker (0+1,2+3), got "0+"'],
    [{ WORKER_DEVICES: 'cpu,0' }, 'WORKER_DEVICES must be auto, cpu, or a comma-separated list of GPU indices such as 0,1, where + joins GPUs into one worker (0+1,2+3), got "cpu,0"'],
    [{ WORKER_DEVICES: 'cpu+0' }, 'WORKER_DEVICES must be auto, cpu, or a comma-separated list of GPU indices such as 0,1, where + joins GPUs into one worker (0+1,2+3), got "cpu+0"'],
    [{ WORKER_DEVICES: '0,0+1' }, 'WORKER_DEVICES must be a list in which each GPU appears once (a GPU belongs to one worker), got "0,0+1"'],
    [{ WORKER_PRELOAD: 'flux1_dev,flux3' }, 'WORKER_PRELOAD must be a comma-separated list of engine ids (flux2_dev_4bit, flux1_dev, sd3_medium, realvis_xl), got "flux1_dev,flux3"'],
    [{ WORKER_HEARTBEAT_INTERVAL_MS: '5000', WORKER_HEARTBEAT_TIMEOUT_MS: '5000' }, 'WORKER_HEARTBEAT_TIMEOUT_MS (5000) must exceed WORKER_HEARTBEAT_INTERVAL_MS (5000)'],
    [{ WORKER_VRAM_BUDGET_GB: '0' }, 'WORKER_VRAM_BUDGET_GB must be a number > 0 and ≤ 4096 (GiB), got "0"'],
    [{ FLUX2_TEXT_ENCODER: 'cloud' }, 'FLUX2_TEXT_ENCODER must be one of auto, local, remote, got "cloud"'],
    [{ FLEXY_CPU_THREADS: '1.5' }, 'FLEXY_CPU_THREADS must be an integer from 1 to 1024, got "1.5"'],
    [{ FLEXY_WORKER_LOG_LEVEL: 'loud' }, 'FLEXY_WORKER_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got "loud"'],
    [{ HF_HUB_OFFLINE: 'maybe' }, 'HF_HUB_OFFLINE must be one of 1, 0, true, false, yes, no, on, off, got "maybe"'],
    [{ FLEXY_FAULT_EXIT_ON_JOB: 'no-code' }, 'FLEXY_FAULT_EXIT_ON_JOB must be <prompt substring>:<exit code|SIGNAME>, got "no-code"'],
    [{ ADMIN_PASSWORD: 'same-password', ADMIN_READONLY_PASSWORD: 'same-password' }, 'ADMIN_READONLY_PASSWORD must differ from ADMIN_PASSWORD'],
  ];

  it.each(BAD)('refuses %j', (env, message) => {
    expect(problems(env)).toEqual([message]);
  });

  it('reports every bad variable at once', () => {
    expect(problems({ PORT: 'x', SYNC_WAIT_MS: '2.5', AUTH_MODE: 'none' })).toEqual([
      'PORT must be an integer from 1 to 65535, got "x"',
      'AUTH_MODE must be one of open, keys, got "none"',
      'SYNC_WAIT_MS must be an integer from 1000 to 3600000 (milliseconds), got "2.5"',
    ]);
  });

  it('a CLI that reads a few settings is not stopped by a service setting it does not read', () => {
    expect(parseSomeSettings({ PORT: 'x', FLEXY_HUB_STALL_SECONDS: '0.5' }, ['FLEXY_HUB_STALL_SECONDS', 'HF_HUB_OFFLINE'])).toEqual({
      FLEXY_HUB_STALL_SECONDS: 0.5,
      HF_HUB_OFFLINE: false,
    });
  });

  it('hands the worker its settings as environment variables, paths made absolute', () => {
    const { workerEnv, modelsDir } = loadConfig({ WORKER_VRAM_BUDGET_GB: '20', FLEXY_COMPILE_CACHE: '.data/compile', PORT: '8080' });
    expect(workerEnv).toMatchObject({ WORKER_VRAM_BUDGET_GB: '20', FLUX2_TEXT_ENCODER: 'auto', MODELS_DIR: modelsDir });
    expect(workerEnv.FLEXY_COMPILE_CACHE).toMatch(/^\/.*\.data\/compile$/);
    expect(workerEnv).not.toHaveProperty('PORT');
  });

  it('documents every setting', () => {
    for (const name of SETTING_NAMES) {
      const doc = settingDoc(name);
      expect(doc.description.length).toBeGreaterThan(10);
      expect(doc.readers.length).toBeGreaterThan(0);
    }
  });
});
