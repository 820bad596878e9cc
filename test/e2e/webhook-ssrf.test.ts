/**
 * Webhooks cannot be aimed at the service's own network (SSRF), over the real stack with private
 * targets not allowed (the default): hostile webhook_url values are refused at create time naming
 * the field (a 422 for a well-formed URL whose target is not public, a 400 for one that is not an
 * http(s) URL without credentials, the form the OpenAPI document states), nothing is stored or queued, and a target that turns hostile after creation
 * is refused by the supervisor at delivery. A real receiver on loopback counts every hit: zero.
 */
import { JobName, QueueName, type WebhookJobPayload } from '@flexy/contracts';
import { WEBHOOK_URL_PATTERN } from '@flexy/webhooks';
import Database from 'better-sqlite3';
import { Queue } from 'bullmq';
import { lookup } from 'node:dns/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { api, startStack, waitForGeneration, type Stack } from '../support/stack';

jest.setTimeout(300_000);

let stack: Stack;
let generations: Queue;
let webhooks: Queue;
let receiver: Server;
let port = 0;
const hits: string[] = [];
/** A name other than localhost that this machine's resolver (hosts file) answers with loopback only. */
let loopbackName = '';

async function resolvesToLoopbackOnly(name: string): Promise<boolean> {
  try {
    const found = await lookup(name, { all: true });
    return found.length > 0 && found.every(({ address }) => address.startsWith('127.') || address === '::1');
  } catch {
    return false;
  }
}

beforeAll(async () => {
  receiver = createServer((req, res) => {
    hits.push(`${req.method} ${req.headers.host}${req.url}`);
    res.writeHead(204).end();
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  port = (receiver.address() as AddressInfo).port;
  for (const name of [hostname(), 'ip6-localhost', 'ip6-loopback', 'localhost.localdomain']) {
    if (!name.endsWith('localhost') && (await resolvesToLoopbackOnly(name))) {
      loopbackName = name;
      break;
    }
  }
  stack = await startStack({ env: { WEBHOOK_ALLOW_PRIVATE: 'false' } });
  const connection = { host: '127.0.0.1', port: stack.redisPort };
  generations = new Queue(QueueName.Generation, { connection });
  webhooks = new Queue(QueueName.Webhook, { connection });
});
afterAll(async () => {
  await generations?.close();
  await webhooks?.close();
  await stack?.stop();
  receiver?.closeAllConnections();
  await new Promise((r) => receiver?.close(r));
});

function rows<T>(sql: string, ...params: unknown[]): T[] {
  const db = new Database(join(stack.dataDir, 'flexyface.db'), { readonly: true });
  try {
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

async function poll<T>(what: string, read: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const hostile = () => [
  `http://127.0.0.1:${port}/hook`,
  `https://127.0.0.1:${port}/hook`,
  `http://2130706433:${port}/hook`,
  `http://0x7f000001:${port}/hook`,
  `http://0x7f.1:${port}/hook`,
  `http://0177.0.0.1:${port}/hook`,
  `http://127.1:${port}/hook`,
  `http://127.0.0.1.:${port}/hook`,
  `http://[::1]:${port}/hook`,
  `http://[::ffff:127.0.0.1]:${port}/hook`,
  `http://[::ffff:7f00:1]:${port}/hook`,
  `http://[64:ff9b::7f00:1]:${port}/hook`,
  `http://[2002:7f00:1::]:${port}/hook`,
  `http://localhost:${port}/hook`,
  `http://LOCALHOST.:${port}/hook`,
  `http://hooks.localhost:${port}/hook`,
  `http://0.0.0.0:${port}/hook`,
  `http://0:${port}/hook`,
  `http://[::]:${port}/hook`,
  'http://169.254.169.254/latest/meta-data/iam/security-credentials/',
  'http://2852039166/latest/meta-data/',
  'http://[::ffff:169.254.169.254]/latest/meta-data/',
  'http://[fd00:ec2::254]/latest/meta-data/',
  'http://10.0.0.1/hook',
  'http://172.16.0.1/hook',
  'http://192.168.0.1/hook',
  'http://100.64.0.1/hook',
  'http://[fd12:3456::1]/hook',
  'http://[fe80::1]/hook',
  'http://[fe80::1%25eth0]/hook',
  'http://224.0.0.1/hook',
  'http://255.255.255.255/hook',
  'file:///etc/passwd',
  `gopher://127.0.0.1:${port}/_hook`,
  `http://user:secret@127.0.0.1:${port}/hook`,
];

function expectRefused(res: { status: number; json: any }, url: string) {
  const wellFormed = new RegExp(WEBHOOK_URL_PATTERN).test(url);
  expect({ url, status: res.status }).toEqual({ url, status: wellFormed ? 422 : 400 });
  expect(res.json.message).toMatch(/webhook_url/);
  expect(res.json.fields.map((f: { field: string }) => f.field)).toContain('webhook_url');
}

describe('create time, private targets off', () => {
  it('refuses every hostile webhook_url on POST /v1/generations, naming the field', async () => {
    for (const url of hostile()) {
      const res = await api(stack, 'POST', '/v1/generations', { prompt: 'ssrf', engine: 'realvis_xl', steps: 1, width: 64, height: 64, webhook_url: url });
      expectRefused(res, url);
    }
  });

  it('refuses a host name that resolves to loopback', async () => {
    expect(loopbackName).not.toBe(''); // the hosts file names this machine (or ip6-localhost) on loopback
    const url = `http://${loopbackName}:${port}/hook`;
    const res = await api(stack, 'POST', '/v1/generations', { prompt: 'ssrf', engine: 'realvis_xl', steps: 1, width: 64, height: 64, webhook_url: url });
    expectRefused(res, url);
    expect(res.json.message).toContain(`resolves to a loopback address`);
  });

  it('refuses them on POST /v1/batches too', async () => {
    for (const url of [...hostile().slice(0, 12), `http://${loopbackName}:${port}/hook`]) {
      const res = await api(stack, 'POST', '/v1/batches', { prompts: ['ssrf'], engines: ['realvis_xl'], steps: 1, width: 64, height: 64, webhook_url: url });
      expectRefused(res, url);
    }
  });

  it('stored and queued nothing', async () => {
    expect(rows<{ n: number }>('SELECT COUNT(*) AS n FROM "Generation"')[0].n).toBe(0);
    expect(rows<{ n: number }>('SELECT COUNT(*) AS n FROM "Batch"')[0].n).toBe(0);
    const counts = await generations.getJobCounts();
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(0);
    expect(hits).toEqual([]);
  });

  it('accepts a public target given as an IP literal (control)', async () => {
    const res = await api(stack, 'POST', '/v1/generations', { prompt: 'control', engine: 'realvis_xl', steps: 1, width: 64, height: 64, webhook_url: 'http://[2606:2800::1]/hook' });
    expect(res.status).toBe(202);
  });
});

describe('delivery time, private targets off', () => {
  it('refuses a target that resolves to loopback by now, records the failed attempt once and contacts nothing', async () => {
    // A generation without a webhook, then its webhook job as if its URL had passed at create time
    // and the name had moved to loopback since: the supervisor resolves and checks again.
    const created = await api(stack, 'POST', '/v1/generations', { prompt: 'moved', engine: 'realvis_xl', steps: 1, width: 64, height: 64 });
    expect(created.status).toBe(202);
    await waitForGeneration(stack, created.json.id);
    const payload: WebhookJobPayload = { generationId: created.json.id, url: `http://${loopbackName}:${port}/hook` };
    await webhooks.add(JobName.DeliverWebhook, payload, { jobId: `webhook-${created.json.id}`, attempts: 5, backoff: { type: 'fixed', delay: 10 } });
    const job = await poll('the webhook job did not fail', async () => {
      const j = await webhooks.getJob(`webhook-${created.json.id}`);
      return j && (await j.getState()) === 'failed' ? j : undefined;
    });
    expect(job.attemptsMade).toBe(1);
    expect(job.failedReason).toMatch(/target refused: host .* resolves to a loopback address/);
    const attempts = rows<{ attempt: number; statusCode: number | null; error: string; deliveredAt: unknown }>(
      'SELECT attempt, statusCode, error, deliveredAt FROM "WebhookDelivery" WHERE generationId = ? ORDER BY attempt',
      created.json.id,
    );
    expect(attempts).toEqual([{ attempt: 1, statusCode: null, error: expect.stringMatching(/^target refused: host .* resolves to a loopback address/), deliveredAt: null }]);
    expect(hits).toEqual([]);
  });
});
