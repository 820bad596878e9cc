import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import { api, ROOT, startStack, waitForGeneration, type Stack } from '../support/stack';

jest.setTimeout(300_000);

const WEBHOOK_SECRET = 'test-webhook-secret';
let stack: Stack;

function createKey(name: string, rate: number, concurrency: number): { id: string; key: string } {
  const out = execFileSync(process.execPath, [join(ROOT, 'dist/apps/gateway/src/auth/keys.cli.js'), 'create', '--name', name, '--rate', String(rate), '--concurrency', String(concurrency)], {
    env: stack.env,
    encoding: 'utf8',
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

beforeAll(async () => {
  // The receivers below listen on loopback: an on-premises target the operator allows explicitly.
  stack = await startStack({ env: { AUTH_MODE: 'keys', WEBHOOK_SECRET, WEBHOOK_ALLOW_PRIVATE: 'true' } });
});

type DeliveryRow = { attempt: number; statusCode: number | null; error: string | null; deliveredAt: unknown };

/** The recorded attempts of a generation's webhook, once there are at least `count` of them. */
async function deliveries(generationId: string, count: number, timeoutMs = 30_000): Promise<DeliveryRow[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const db = new Database(join(stack.dataDir, 'flexyface.db'), { readonly: true });
    let rows: DeliveryRow[];
    try {
      rows = db.prepare('SELECT attempt, statusCode, error, deliveredAt FROM "WebhookDelivery" WHERE generationId = ? ORDER BY attempt').all(generationId) as DeliveryRow[];
    } finally {
      db.close();
    }
    if (rows.length >= count) return rows;
    if (Date.now() > deadline) throw new Error(`${rows.length} of ${count} webhook attempts recorded for ${generationId} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
afterAll(async () => {
  await stack?.stop();
});

describe('API keys', () => {
  it('refuses calls without a key or with an unknown one (401), lets health checks through', async () => {
    expect((await api(stack, 'POST', '/v1/generations', { prompt: 'x', engine: 'flux1_dev' })).status).toBe(401);
    expect((await api(stack, 'GET', '/v1/engines', undefined, { authorization: 'Bearer ffk_00000000_nope' })).status).toBe(401);
    expect((await api(stack, 'GET', '/health/live')).status).toBe(200);
  });

  it('accepts a valid key and refuses it once revoked', async () => {
    const { id, key } = createKey('revocable', 100, 10);
    expect((await api(stack, 'GET', '/v1/engines', undefined, { 'x-api-key': key })).status).toBe(200);
    execFileSync(process.execPath, [join(ROOT, 'dist/apps/gateway/src/auth/keys.cli.js'), 'revoke', id], { env: stack.env });
    await new Promise((r) => setTimeout(r, 5500)); // the guard caches a key for up to 5 s
    expect((await api(stack, 'GET', '/v1/engines', undefined, { 'x-api-key': key })).status).toBe(401);
  });

  it('answers 429 with Retry-After past the per-minute rate', async () => {
    const { key } = createKey('slow', 3, 10);
    const auth = { authorization: `Bearer ${key}` };
    const body = { prompt: 'rate', engine: 'realvis_xl', steps: 1, width: 64, height: 64 };
    for (let i = 0; i < 3; i++) expect((await api(stack, 'POST', '/v1/generations', body, auth)).status).toBe(202);
    const limited = await api(stack, 'POST', '/v1/generations', body, auth);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  it('answers 429 past the concurrent-job quota and frees the slot when the job ends', async () => {
    const { key } = createKey('one-at-a-time', 100, 1);
    const auth = { authorization: `Bearer ${key}` };
    const long = await api(stack, 'POST', '/v1/generations', { prompt: 'long', engine: 'flux1_dev', steps: 60, width: 256, height: 256 }, auth);
    expect(long.status).toBe(202);
    const second = await api(stack, 'POST', '/v1/generations', { prompt: 'second', engine: 'flux1_dev', steps: 1, width: 64, height: 64 }, auth);
    expect(second.status).toBe(429);
    expect(second.json.message).toMatch(/concurrent-job quota/);
    await waitForGeneration(stack, long.json.id, 120_000, auth);
    const third = await api(stack, 'POST', '/v1/generations', { prompt: 'third', engine: 'flux1_dev', steps: 1, width: 64, height: 64 }, auth);
    expect(third.status).toBe(202);
  });
});

describe('webhooks', () => {
  let server: Server;
  const received: Array<{ body: string; signature: string }> = [];
  let port = 0;

  beforeAll(async () => {
    let calls = 0;
    server = createServer((req: IncomingMessage, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        received.push({ body, signature: String(req.headers['x-flexyface-signature']) });
        // The first delivery fails, so the retry path is exercised.
        res.statusCode = ++calls === 1 ? 500 : 204;
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => new Promise((r) => server.close(r)));

  it('signs the delivery, retries a failed one with backoff and records every attempt', async () => {
    const { key } = createKey('hooks', 100, 10);
    const res = await api(
      stack,
      'POST',
      '/v1/generations',
      { prompt: 'notify me', engine: 'sd3_medium', seed: 2, steps: 1, width: 64, height: 64, webhook_url: `http://127.0.0.1:${port}/hook` },
      { authorization: `Bearer ${key}` },
    );
    expect(res.status).toBe(202);
    for (let i = 0; i < 200 && received.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    expect(received).toHaveLength(2);
    for (const { body, signature } of received) {
      const [, t, v1] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(signature)!;
      expect(createHmac('sha256', WEBHOOK_SECRET).update(`${t}.${body}`).digest('hex')).toBe(v1);
      expect(JSON.parse(body)).toMatchObject({ type: 'generation.succeeded', generation: { id: res.json.id, status: 'succeeded' } });
    }
    const rows = await deliveries(res.json.id, 2);
    expect(rows.map((r) => [r.attempt, r.statusCode])).toEqual([[1, 500], [2, 204]]);
    expect(rows[1].deliveredAt).not.toBeNull();
  });

  it('does not follow a redirect: the 302 is a failed attempt and its target is never contacted', async () => {
    const targetHits: string[] = [];
    const target = createServer((req, res) => {
      targetHits.push(String(req.url));
      res.writeHead(204).end();
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
    const redirectHits: string[] = [];
    const redirect = createServer((req, res) => {
      redirectHits.push(String(req.url));
      res.writeHead(302, { location: `http://127.0.0.1:${(target.address() as { port: number }).port}/stolen` }).end();
    });
    await new Promise<void>((r) => redirect.listen(0, '127.0.0.1', () => r()));
    try {
      const { key } = createKey('redirected', 100, 10);
      const webhook_url = `http://127.0.0.1:${(redirect.address() as { port: number }).port}/hook`;
      const res = await api(stack, 'POST', '/v1/generations', { prompt: 'redirect me', engine: 'sd3_medium', seed: 3, steps: 1, width: 64, height: 64, webhook_url }, { authorization: `Bearer ${key}` });
      expect(res.status).toBe(202);
      const [first] = await deliveries(res.json.id, 1, 60_000);
      expect(first).toEqual({ attempt: 1, statusCode: 302, error: 'answered 302; redirects are not followed', deliveredAt: null });
      // The retry comes a second later and is refused the same way: the target still has no hit.
      const [, second] = await deliveries(res.json.id, 2);
      expect(second).toMatchObject({ attempt: 2, statusCode: 302, deliveredAt: null });
      expect(redirectHits.length).toBeGreaterThanOrEqual(2);
      expect(new Set(redirectHits)).toEqual(new Set(['/hook']));
      expect(targetHits).toEqual([]);
    } finally {
      redirect.closeAllConnections();
      target.closeAllConnections();
      await Promise.all([new Promise((r) => redirect.close(r)), new Promise((r) => target.close(r))]);
    }
  });

  it('refuses a webhook URL that is not http(s)', async () => {
    const { key } = createKey('bad-hook', 100, 10);
    const res = await api(stack, 'POST', '/v1/generations', { prompt: 'x', engine: 'flux1_dev', webhook_url: 'file:///etc/passwd' }, { authorization: `Bearer ${key}` });
    expect(res.status).toBe(400);
    expect(res.json.message).toMatch(/webhook_url/);
  });
});
