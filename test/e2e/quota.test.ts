import Database from 'better-sqlite3';
import { join } from 'node:path';
import { inflightKey } from '@flexy/contracts';
import Redis from 'ioredis';
import { api, freePort, manage, ROOT, startStack, stopProcess, type ManagedProcess, type Stack } from '../support/stack';
import { createKeys, type KeySpec, type TestKey } from '../support/keys';

jest.setTimeout(300_000);

/**
 * No supervisor: every accepted job stays queued, so it holds its concurrent slot for as long as the
 * test needs. The synchronous PromptPics routes give up after SYNC_WAIT_MS (504 for /generate, the
 * unfinished run for /nerd-sandbox), their jobs still charged and queued.
 */
let stack: Stack;
let keys: Record<string, TestKey>;

const SMALL = { steps: 1, width: 64, height: 64 };

/** Each creating route with a body that makes one job, and what it answers when it accepts. */
const ROUTES: Array<{ path: string; body: object; accepted: number }> = [
  { path: '/v1/generations', body: { prompt: 'quota', engine: 'flux1_dev', ...SMALL }, accepted: 202 },
  { path: '/generate', body: { prompt: 'quota', ...SMALL }, accepted: 504 },
  { path: '/nerd-sandbox', body: { prompt: 'quota', ...SMALL, engines: ['realvis_xl'] }, accepted: 200 },
  { path: '/v1/sandbox-runs', body: { prompt: 'quota', ...SMALL, engines: ['realvis_xl'] }, accepted: 202 },
  { path: '/v1/batches', body: { prompts: ['quota'], engines: ['flux1_dev'], ...SMALL }, accepted: 202 },
];
const ONE_GENERATION = ROUTES[0].body;

/** Every key the specs below use, made up front (each is a CLI run). */
const KEYS: Record<string, KeySpec> = {
  ...Object.fromEntries(ROUTES.map(({ path }) => [`rate ${path}`, { rate: 1, concurrency: 10 }])),
  ...Object.fromEntries(ROUTES.map(({ path }) => [`concurrency ${path}`, { rate: 1000, concurrency: 1 }])),
  'slot-back': { rate: 1000, concurrency: 1 },
  replay: { rate: 1000, concurrency: 1 },
  'four-slots': { rate: 1000, concurrency: 5 },
  'four-rate': { rate: 5, concurrency: 100 },
  skipped: { rate: 1000, concurrency: 1 },
  narrow: { rate: 1000, concurrency: 3 },
  slow: { rate: 3, concurrency: 1000 },
  'two-gateways-concurrency': { rate: 10_000, concurrency: 10 },
  'two-gateways-rate': { rate: 10, concurrency: 10_000 },
  'two-gateways-mixed': { rate: 10_000, concurrency: 12 },
};

beforeAll(async () => {
  stack = await startStack({ supervisors: 0, env: { AUTH_MODE: 'keys', SYNC_WAIT_MS: '1000' } });
  keys = await createKeys(stack, KEYS);
});
afterAll(async () => {
  await stack?.stop();
});

/** The rate is counted in fixed one-minute windows: start a rate check well inside one, so both requests land in it. */
async function awayFromRateWindowEdge(): Promise<void> {
  while (Date.now() % 60_000 > 50_000) await new Promise((r) => setTimeout(r, 250));
}

/** The generations recorded for a key (every job a route accepted is one). */
function recordedJobs(key: TestKey): number {
  const db = new Database(join(stack.dataDir, 'flexyface.db'), { readonly: true });
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM "Generation" WHERE apiKeyId = ?').get(key.id) as { n: number }).n;
  } finally {
    db.close();
  }
}

function expectTooMany(r: { status: number; headers: Headers; json: any }, message: RegExp) {
  expect({ status: r.status, message: r.json?.message }).toEqual({ status: 429, message: expect.stringMatching(message) });
  const retryAfter = Number(r.headers.get('retry-after'));
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(61);
}

describe('every creating route charges the key', () => {
  it.each(ROUTES)('$path: 429 with Retry-After past the per-minute job rate, nothing recorded', async ({ path, body, accepted }) => {
    const key = keys[`rate ${path}`];
    await awayFromRateWindowEdge();
    expect((await api(stack, 'POST', path, body, key.auth)).status).toBe(accepted);
    expectTooMany(await api(stack, 'POST', path, body, key.auth), /rate limit of 1 jobs per minute/);
    // Any other creating route is refused too: the rate is the key's, not the route's.
    expectTooMany(await api(stack, 'POST', '/v1/generations', ONE_GENERATION, key.auth), /rate limit/);
    expect(recordedJobs(key)).toBe(1);
  });

  it.each(ROUTES)('$path: 429 with Retry-After past the concurrent-job quota, nothing recorded', async ({ path, body, accepted }) => {
    const key = keys[`concurrency ${path}`];
    expect((await api(stack, 'POST', path, body, key.auth)).status).toBe(accepted);
    expectTooMany(await api(stack, 'POST', path, body, key.auth), /concurrent-job quota of 1 reached/);
    expectTooMany(await api(stack, 'POST', '/v1/generations', ONE_GENERATION, key.auth), /concurrent-job quota/);
    expect(recordedJobs(key)).toBe(1);
  });

  it('a cancelled job gives its concurrent slot back', async () => {
    const key = keys['slot-back'];
    const first = await api(stack, 'POST', '/v1/generations', ONE_GENERATION, key.auth);
    expect(first.status).toBe(202);
    expectTooMany(await api(stack, 'POST', '/v1/generations', ONE_GENERATION, key.auth), /concurrent-job quota/);
    expect((await api(stack, 'POST', `/v1/generations/${first.json.id}/cancel`, undefined, key.auth)).json.status).toBe('cancelled');
    expect((await api(stack, 'POST', '/v1/generations', ONE_GENERATION, key.auth)).status).toBe(202);
  });

  it('a replay of an idempotent create is not charged again', async () => {
    const key = keys.replay;
    const headers = { ...key.auth, 'idempotency-key': 'quota-replay' };
    const first = await api(stack, 'POST', '/v1/generations', ONE_GENERATION, headers);
    const replay = await api(stack, 'POST', '/v1/generations', ONE_GENERATION, headers);
    expect([first.status, replay.status]).toEqual([202, 202]);
    expect(replay.json.id).toBe(first.json.id);
    expect(recordedJobs(key)).toBe(1);
  });
});

describe('counted per job', () => {
  const FOUR_ENGINES = { prompt: 'four engines', ...SMALL, engines: ['flux2_dev_4bit', 'flux1_dev', 'sd3_medium', 'realvis_xl'] };

  it('a four-engine sandbox run takes four concurrent slots', async () => {
    const key = keys['four-slots'];
    expect((await api(stack, 'POST', '/v1/sandbox-runs', FOUR_ENGINES, key.auth)).status).toBe(202);
    expect((await api(stack, 'POST', '/v1/generations', ONE_GENERATION, key.auth)).status).toBe(202);
    expectTooMany(await api(stack, 'POST', '/v1/generations', ONE_GENERATION, key.auth), /concurrent-job quota of 5 reached \(5 in flight\)/);
    expectTooMany(await api(stack, 'POST', '/nerd-sandbox', FOUR_ENGINES, key.auth), /concurrent-job quota/);
    expect(recordedJobs(key)).toBe(5);
  });

  it('a four-engine run through /nerd-sandbox takes four units of the rate', async () => {
    const key = keys['four-rate'];
    await awayFromRateWindowEdge();
    expect((await api(stack, 'POST', '/nerd-sandbox', FOUR_ENGINES, key.auth)).status).toBe(200);
    expect((await api(stack, 'POST', '/v1/batches', { prompts: ['one'], engines: ['flux1_dev'], ...SMALL }, key.auth)).status).toBe(202);
    expectTooMany(await api(stack, 'POST', '/generate', ONE_GENERATION, key.auth), /rate limit of 5 jobs per minute reached \(5 used\)/);
    expect(recordedJobs(key)).toBe(5);
  });

  it('an engine that refuses the settings is skipped, and not charged', async () => {
    const key = keys.skipped;
    // 72 is a multiple of 8 (RealVisXL) but not of 16 (the other three): one job, not four.
    const run = await api(stack, 'POST', '/v1/sandbox-runs', { ...FOUR_ENGINES, width: 72 }, key.auth);
    expect(run.status).toBe(202);
    expect(run.json.results.filter((r: { status: string }) => r.status === 'skipped')).toHaveLength(3);
    expectTooMany(await api(stack, 'POST', '/v1/generations', ONE_GENERATION, key.auth), /concurrent-job quota/);
  });

  it('a request larger than the whole allowance is a 422 naming the field, and takes nothing', async () => {
    const narrow = keys.narrow;
    const slow = keys.slow;
    const batchOfFour = { prompts: ['a', 'b'], engines: ['flux1_dev', 'sd3_medium'], ...SMALL };
    await awayFromRateWindowEdge();
    for (const key of [narrow, slow]) {
      for (const [path, body, field] of [
        ['/v1/sandbox-runs', FOUR_ENGINES, 'engines'],
        ['/nerd-sandbox', FOUR_ENGINES, 'engines'],
        ['/v1/batches', batchOfFour, 'prompts'],
      ] as const) {
        const r = await api(stack, 'POST', path, body, key.auth);
        expect({ path, status: r.status }).toEqual({ path, status: 422 });
        expect(r.json.fields).toEqual([{ field, message: expect.stringMatching(new RegExp(`^${field} asks for 4 jobs at once`)) }]);
      }
      // Nothing was taken: the whole allowance is still there.
      for (let i = 0; i < 3; i++) expect((await api(stack, 'POST', '/v1/generations', ONE_GENERATION, key.auth)).status).toBe(202);
      expect(recordedJobs(key)).toBe(3);
    }
  });
});

describe('atomic across gateways', () => {
  let second: ManagedProcess;
  let secondUrl: string;
  let redis: Redis;

  beforeAll(async () => {
    const port = await freePort();
    secondUrl = `http://127.0.0.1:${port}`;
    second = manage(`gateway-${port}`, process.execPath, [join(ROOT, 'dist/apps/gateway/src/main.js')], { ...stack.env, PORT: String(port) });
    await second.waitFor(/listening on/, 60_000);
    redis = new Redis(stack.redisUrl);
  });
  afterAll(async () => {
    redis?.disconnect();
    if (second) await stopProcess(second);
  });

  /** Sends every request at once, alternating between the two gateways. */
  function burst(requests: Array<{ path: string; body: object }>, key: TestKey) {
    return Promise.all(
      requests.map(({ path, body }, i) => {
        const url = i % 2 === 0 ? stack.url : secondUrl;
        return fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...key.auth }, body: JSON.stringify(body) }).then(async (r) => ({
          status: r.status,
          body: await r.text(),
        }));
      }),
    );
  }

  it('concurrent creates on two gateways never exceed the concurrent-job quota', async () => {
    const key = keys['two-gateways-concurrency'];
    const answers = await burst(Array.from({ length: 40 }, () => ({ path: '/v1/generations', body: ONE_GENERATION })), key);
    expect(answers.filter((a) => a.status === 202)).toHaveLength(10);
    expect(answers.filter((a) => a.status === 429)).toHaveLength(30);
    expect(recordedJobs(key)).toBe(10);
    expect(await redis.zcard(inflightKey(key.id))).toBe(10);
  });

  it('concurrent creates on two gateways never exceed the per-minute rate', async () => {
    const key = keys['two-gateways-rate'];
    await awayFromRateWindowEdge();
    const answers = await burst(Array.from({ length: 40 }, () => ({ path: '/v1/generations', body: ONE_GENERATION })), key);
    expect(answers.filter((a) => a.status === 202)).toHaveLength(10);
    expect(answers.filter((a) => a.status === 429)).toHaveLength(30);
    expect(recordedJobs(key)).toBe(10);
  });

  it('mixed routes of one, two and four jobs: what is taken is exactly what is recorded, never more than the quota', async () => {
    const key = keys['two-gateways-mixed'];
    const mix = [
      { path: '/v1/generations', body: ONE_GENERATION, jobs: 1 },
      { path: '/v1/sandbox-runs', body: { prompt: 'mixed', ...SMALL, engines: ['flux2_dev_4bit', 'flux1_dev', 'sd3_medium', 'realvis_xl'] }, jobs: 4 },
      { path: '/v1/batches', body: { prompts: ['mixed a', 'mixed b'], engines: ['flux1_dev'], ...SMALL }, jobs: 2 },
    ];
    const requests = Array.from({ length: 30 }, (_, i) => mix[i % mix.length]);
    const answers = await burst(requests, key);
    expect(answers.every((a) => a.status === 202 || a.status === 429)).toBe(true);
    const taken = answers.reduce((sum, a, i) => sum + (a.status === 202 ? requests[i].jobs : 0), 0);
    expect(taken).toBeGreaterThan(0);
    expect(taken).toBeLessThanOrEqual(12);
    expect(recordedJobs(key)).toBe(taken);
    expect(await redis.zcard(inflightKey(key.id))).toBe(taken);
  });
});
