import { readdirSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import IORedis from 'ioredis';
import sharp from 'sharp';
import { api, manage, startStack, stopProcess, waitForGeneration, type ManagedProcess, type Stack } from '../support/stack';
import { readSse } from '../support/sse';

jest.setTimeout(300_000);

const SSE_CAP = 4;
const tiny = { engine: 'flux1_dev', steps: 1, width: 64, height: 64 } as const;

let stack: Stack;
let redis: IORedis;
beforeAll(async () => {
  stack = await startStack({ env: { SSE_MAX_STREAMS_PER_KEY: String(SSE_CAP), MAX_BODY_BYTES: String(2 * 1024 * 1024) } });
  redis = new IORedis(stack.redisUrl);
});
afterAll(async () => {
  redis?.disconnect();
  await stack?.stop();
});

/** Polls `probe` until it returns a value `ok` accepts, or fails after the deadline with the last value. */
async function eventually<T>(probe: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms; last value ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function imageFiles(): string[] {
  const root = join(stack.dataDir, 'images');
  try {
    return readdirSync(root, { recursive: true }).map(String).filter((f) => f.endsWith('.png'));
  } catch {
    return [];
  }
}

async function pngDataUri(): Promise<string> {
  const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#369' } }).png().toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

describe('references', () => {
  it('checks every reference before storing any: a bad second one leaves no file of the first', async () => {
    const before = imageFiles();
    const res = await api(stack, 'POST', '/v1/generations', {
      prompt: 'the same mug on a beach',
      engine: 'flux2_dev_4bit',
      references: [await pngDataUri(), 'data:image/png;base64,bm90IGFuIGltYWdl'],
    });
    // A data URI of the documented form whose content does not decode: 422.
    expect(res.status).toBe(422);
    expect(res.json.fields[0].field).toBe('references[1]');
    expect(imageFiles()).toEqual(before);
  });
});

describe('prompts must be well-formed Unicode', () => {
  const lone = 'a lighthouse \ud800 at dawn';
  it.each([
    ['/v1/generations', { prompt: lone, ...tiny }, 'prompt'],
    ['/generate', { prompt: lone, ...tiny }, 'prompt'],
    ['/nerd-sandbox', { prompt: lone, engines: ['flux1_dev'] }, 'prompt'],
    ['/v1/sandbox-runs', { prompt: lone, engines: ['flux1_dev'] }, 'prompt'],
    ['/v1/batches', { prompts: ['fine', lone], engines: ['flux1_dev'] }, 'prompts[1]'],
    ['/v1/generations', { prompt: 'fine', negative_prompt: `blurry \udc00`, ...tiny, engine: 'sd3_medium' }, 'negative_prompt'],
  ])('%s refuses a lone surrogate (case %#)', async (path, body, field) => {
    const queuedBefore = await redis.zcard('bull:generation:prioritized');
    // JSON.stringify writes a lone surrogate as the escape \ud800, which JSON parsers accept.
    const res = await api(stack, 'POST', path, body);
    expect(res.status).toBe(400);
    expect(res.json.fields.map((f: { field: string }) => f.field)).toContain(field);
    expect(res.text).not.toMatch(/Error:|at \w+ \(/); // no internal exception text
    expect(await redis.zcard('bull:generation:prioritized')).toBe(queuedBefore);
  });
});

describe('Idempotency-Key', () => {
  it('gives every one of eight concurrent identical requests the same answer', async () => {
    const body = { prompt: 'idempotent fox', seed: 5, ...tiny };
    const key = `concurrent-${Date.now()}`;
    const answers = await Promise.all(Array.from({ length: 8 }, () => api(stack, 'POST', '/v1/generations', body, { 'idempotency-key': key })));
    expect(answers.map((a) => a.status)).toEqual(Array(8).fill(202));
    expect(new Set(answers.map((a) => a.json.id)).size).toBe(1);
    expect(answers.filter((a) => a.headers.get('idempotent-replayed') === 'true')).toHaveLength(7);
  });

  it('compares bodies regardless of key order', async () => {
    const key = `order-${Date.now()}`;
    const first = await api(stack, 'POST', '/v1/generations', JSON.stringify({ prompt: 'ordered', seed: 9, engine: 'flux1_dev', steps: 1, width: 64, height: 64 }), { 'idempotency-key': key, 'content-type': 'application/json' });
    const again = await api(stack, 'POST', '/v1/generations', JSON.stringify({ height: 64, width: 64, steps: 1, engine: 'flux1_dev', seed: 9, prompt: 'ordered' }), { 'idempotency-key': key, 'content-type': 'application/json' });
    expect(first.status).toBe(202);
    expect(again.status).toBe(202);
    expect(again.json.id).toBe(first.json.id);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
  });
});

describe('event streams', () => {
  let finished: string;
  beforeAll(async () => {
    finished = (await api(stack, 'POST', '/v1/generations', { prompt: 'streamed', seed: 11, ...tiny }, { prefer: 'wait=120' })).json.id;
    await waitForGeneration(stack, finished);
  });

  it('ends at once for a client whose Last-Event-ID is at or past the terminal event', async () => {
    const url = `${stack.url}/v1/generations/${finished}/events`;
    const all = await readSse(url, { until: (m) => m.event === 'succeeded' });
    const last = all.messages[all.messages.length - 1].id!;
    for (const cursor of [last, '99999999999999-0']) {
      const t0 = Date.now();
      const resumed = await readSse(url, { lastEventId: cursor, timeoutMs: 20_000 });
      expect(resumed.messages).toEqual([]);
      expect(Date.now() - t0).toBeLessThan(5000);
    }
  });

  it('serves many streams over shared Redis connections, caps them per owner, and takes a client leaving calmly', async () => {
    const connected = async () => Number(/connected_clients:(\d+)/.exec(await redis.info('clients'))![1]);
    const created = await api(stack, 'POST', '/v1/generations', { prompt: 'long stream', seed: 12, engine: 'flux1_dev', steps: 100, width: 512, height: 512 });
    expect(created.status).toBe(202);
    const running = created.json.id;
    const url = `${stack.url}/v1/generations/${running}/events`;
    const baseline = await connected();
    const controllers = Array.from({ length: SSE_CAP }, () => new AbortController());
    const streams = controllers.map((c) => fetch(url, { signal: c.signal }));
    const responses = await Promise.all(streams);
    expect(responses.map((r) => r.status)).toEqual(Array(SSE_CAP).fill(200));
    // One more than the cap is refused while the others are open.
    expect((await api(stack, 'GET', `/v1/generations/${running}/events`)).status).toBe(429);
    // The streams share the gateway's connections: at most one more for the process's hub.
    expect(await connected()).toBeLessThanOrEqual(baseline + 1);
    for (const c of controllers) c.abort();
    await Promise.all(responses.map((r) => r.body?.cancel().catch(() => undefined)));
    // Every slot is given back once the clients are gone, and a new stream is served again.
    await eventually(() => redis.zcard('flexy:sse:anonymous'), (n) => n === 0);
    expect((await readSse(url, { until: (m) => m.event === 'progress' })).status).toBe(200);
    await api(stack, 'POST', `/v1/generations/${running}/cancel`);
    await eventually(() => redis.zcard('flexy:sse:anonymous'), (n) => n === 0);
    expect(stack.gateway.output.filter((l) => /\bERROR\b/.test(l))).toEqual([]);
  });
});

describe('transport', () => {
  it('refuses a JSON body larger than MAX_BODY_BYTES with a 413 and keeps serving', async () => {
    const huge = JSON.stringify({ prompt: 'x'.repeat(3 * 1024 * 1024), ...tiny });
    const res = await api(stack, 'POST', '/v1/generations', huge, { 'content-type': 'application/json' });
    expect(res.status).toBe(413);
    expect(res.json).toMatchObject({ statusCode: 413 });
    expect((await api(stack, 'GET', '/health/live')).status).toBe(200);
  });

  it('in open mode, answers only requests addressed to a loopback name (DNS rebinding)', async () => {
    const port = Number(new URL(stack.url).port);
    const status = (host: string) =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, path: '/v1/engines', headers: { host } }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('error', reject);
        req.end();
      });
    expect(await status('attacker.example')).toBe(403);
    expect(await status(`attacker.example:${port}`)).toBe(403);
    expect(await status(`localhost:${port}`)).toBe(200);
    expect(await status(`127.0.0.1:${port}`)).toBe(200);
    expect(await status(`[::1]:${port}`)).toBe(200);
  });
});

describe('TRUST_PROXY', () => {
  let proxied: ManagedProcess | null = null;
  afterAll(async () => {
    if (proxied) await stopProcess(proxied);
  });

  /** Opens the dashboard's login form through a gateway, as if behind a TLS-terminating proxy; answers the form's cookie. */
  async function login(url: string): Promise<string> {
    const res = await fetch(`${url}/admin/login`, { headers: { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.7' } });
    expect(res.status).toBe(200);
    return res.headers.get('set-cookie') ?? '';
  }

  it('believes a trusted proxy’s scheme (Secure cookies) and nobody else’s', async () => {
    const { freePort } = await import('../support/stack');
    const port = await freePort();
    const env = { ...stack.env, PORT: String(port), ADMIN_PASSWORD: 'correct horse battery staple', TRUST_PROXY: 'loopback' };
    proxied = manage(`gateway-proxied-${port}`, process.execPath, ['dist/apps/gateway/src/main.js'], env);
    await proxied.waitFor(/listening on/, 60_000);
    expect(await login(`http://127.0.0.1:${port}`)).toMatch(/;\s*Secure/i);
    await stopProcess(proxied);
    proxied = manage(`gateway-direct-${port}`, process.execPath, ['dist/apps/gateway/src/main.js'], { ...env, TRUST_PROXY: '' });
    await proxied.waitFor(/listening on/, 60_000);
    const cookie = await login(`http://127.0.0.1:${port}`);
    expect(cookie).not.toBe('');
    expect(cookie).not.toMatch(/;\s*Secure/i);
  });
});
