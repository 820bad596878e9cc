import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { deliverWebhook, DELIVERY_LIMITS } from './deliver';
import { WebhookTargetRefused, webhookUrlProblem, type Resolver } from './webhook-target';

interface Receiver {
  port: number;
  hits: Array<{ host: string | undefined; path: string | undefined; body: string; headers: IncomingMessage['headers'] }>;
  server: Server;
}

/** A real HTTP receiver on loopback that records every request and answers with `respond`. */
async function receiver(respond: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.writeHead(204).end()): Promise<Receiver> {
  const hits: Receiver['hits'] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      hits.push({ host: req.headers.host, path: req.url, body, headers: req.headers });
      respond(req, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as AddressInfo).port, hits, server };
}

const receivers: Receiver[] = [];
async function started(respond?: Parameters<typeof receiver>[0]) {
  const r = await receiver(respond);
  receivers.push(r);
  return r;
}
afterEach(async () => {
  for (const r of receivers.splice(0)) {
    r.server.closeAllConnections();
    await new Promise((res) => r.server.close(res));
  }
});

/** Answers each lookup with the next list of addresses, counting the calls. */
function scripted(...answers: string[][]): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const resolve = async (host: string) => {
    calls.push(host);
    const next = answers[Math.min(calls.length - 1, answers.length - 1)];
    return next.map((address) => ({ address, family: (address.includes(':') ? 6 : 4) as 4 | 6 }));
  };
  return Object.assign(resolve, { calls });
}

const webhook = { headers: { 'content-type': 'application/json', 'x-flexyface-signature': 't=1,v1=ab' }, body: '{"type":"generation.succeeded"}' };

describe('deliverWebhook', () => {
  it('connects to the checked address with one lookup, keeping the name in the Host header', async () => {
    const rx = await started();
    const resolve = scripted(['127.0.0.1']);
    // The name exists nowhere but in this resolver: reaching the receiver proves the checked address was used.
    const result = await deliverWebhook(`http://hooks.flexy.invalid:${rx.port}/hook?x=1`, webhook, { allowPrivate: true, resolve });
    expect(result).toEqual({ statusCode: 204 });
    expect(resolve.calls).toEqual(['hooks.flexy.invalid']);
    expect(rx.hits).toHaveLength(1);
    expect(rx.hits[0]).toMatchObject({ host: `hooks.flexy.invalid:${rx.port}`, path: '/hook?x=1', body: webhook.body });
    expect(rx.hits[0].headers['x-flexyface-signature']).toBe('t=1,v1=ab');
  });

  it('does not contact a target that passed at create time but resolves to loopback at delivery', async () => {
    const rx = await started();
    const url = `http://hooks.flexy.invalid:${rx.port}/hook`;
    const resolve = scripted(['93.184.215.14'], ['127.0.0.1']);
    expect(await webhookUrlProblem(url, { allowPrivate: false, resolve })).toBeNull();
    const delivery = deliverWebhook(url, webhook, { allowPrivate: false, resolve });
    await expect(delivery).rejects.toBeInstanceOf(WebhookTargetRefused);
    await expect(delivery).rejects.toThrow(/resolves to a loopback address \(127\.0\.0\.1\)/);
    expect(resolve.calls).toHaveLength(2);
    expect(rx.hits).toHaveLength(0);
  });

  it('refuses when any one of the addresses is forbidden', async () => {
    const rx = await started();
    const resolve = scripted(['93.184.215.14', '::ffff:127.0.0.1']);
    await expect(deliverWebhook(`http://hooks.flexy.invalid:${rx.port}/`, webhook, { allowPrivate: false, resolve })).rejects.toBeInstanceOf(WebhookTargetRefused);
    expect(rx.hits).toHaveLength(0);
  });

  it('does not follow a redirect: the 3xx is the answer', async () => {
    const b = await started();
    const a = await started((_req, res) => res.writeHead(302, { location: `http://127.0.0.1:${b.port}/stolen` }).end());
    const result = await deliverWebhook(`http://127.0.0.1:${a.port}/hook`, webhook, { allowPrivate: true });
    expect(result).toEqual({ statusCode: 302 });
    expect(a.hits).toHaveLength(1);
    expect(b.hits).toHaveLength(0);
  });

  it('gives up on a receiver that never answers', async () => {
    const rx = await started(() => undefined);
    const limits = { ...DELIVERY_LIMITS, totalTimeoutMs: 500 };
    await expect(deliverWebhook(`http://127.0.0.1:${rx.port}/slow`, webhook, { allowPrivate: true }, limits)).rejects.toThrow(/no answer within 500 ms/);
  });

  it('reads at most maxResponseBytes of the answer, then closes', async () => {
    let closed = false;
    const rx = await started((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(16 * 1024, 1);
      const pump = () => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', pump);
      };
      res.on('close', () => (closed = true));
      pump();
    });
    const limits = { ...DELIVERY_LIMITS, maxResponseBytes: 64 * 1024, totalTimeoutMs: 60_000 };
    expect(await deliverWebhook(`http://127.0.0.1:${rx.port}/endless`, webhook, { allowPrivate: true }, limits)).toEqual({ statusCode: 200 });
    for (let i = 0; i < 100 && !closed; i++) await new Promise((r) => setTimeout(r, 20));
    expect(closed).toBe(true);
  });

  it('refuses before any connection when private targets are off', async () => {
    const rx = await started();
    await expect(deliverWebhook(`http://127.0.0.1:${rx.port}/hook`, webhook, { allowPrivate: false })).rejects.toBeInstanceOf(WebhookTargetRefused);
    await expect(deliverWebhook(`http://localhost:${rx.port}/hook`, webhook, { allowPrivate: false })).rejects.toBeInstanceOf(WebhookTargetRefused);
    expect(rx.hits).toHaveLength(0);
  });
});
