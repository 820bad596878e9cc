import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupAddress } from 'node:dns';
import type { LookupFunction } from 'node:net';
import { resolveWebhookTarget, type WebhookPolicy, type WebhookTarget } from './webhook-target';

export interface DeliveryLimits {
  /** TCP connect, after the lookup. */
  connectTimeoutMs: number;
  /** From the request to the end of the answer (TLS, upload, headers, body). */
  totalTimeoutMs: number;
  /** Bytes of the answer's body read; the connection is closed after that. */
  maxResponseBytes: number;
}

export const DELIVERY_LIMITS: DeliveryLimits = { connectTimeoutMs: 5000, totalTimeoutMs: 10_000, maxResponseBytes: 64 * 1024 };

export interface WebhookRequest {
  headers: Record<string, string>;
  body: string;
}

/**
 * Hands the connection the address that was checked, whatever name it asks for: there is no second
 * lookup that a short-TTL DNS answer could point elsewhere (DNS rebinding).
 */
function pinnedLookup(target: WebhookTarget): LookupFunction {
  return ((_hostname: string, options: { all?: boolean }, callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void) => {
    if (options?.all) callback(null, [{ address: target.address, family: target.family }]);
    else callback(null, target.address, target.family);
  }) as LookupFunction;
}

/**
 * POSTs a webhook to a target checked just before (resolveWebhookTarget, policy applied to every
 * address), connecting to the checked address itself. Redirects are not followed: a 3xx is the
 * answer. Resolves with the status code; throws WebhookTargetRefused (do not retry),
 * WebhookLookupFailed, or a network or timeout error.
 */
export async function deliverWebhook(rawUrl: string, webhook: WebhookRequest, policy: WebhookPolicy, limits: DeliveryLimits = DELIVERY_LIMITS): Promise<{ statusCode: number }> {
  const target = await resolveWebhookTarget(rawUrl, policy);
  const { url } = target;
  const body = Buffer.from(webhook.body);
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    let statusCode: number | undefined;
    let settled = false;
    let req: ClientRequest;
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(total);
      clearTimeout(connect);
      req.destroy();
      if (statusCode !== undefined) resolve({ statusCode });
      else reject(err ?? new Error('the connection closed before an answer'));
    };
    const total = setTimeout(() => finish(new Error(`no answer within ${limits.totalTimeoutMs} ms`)), limits.totalTimeoutMs);
    let connect: NodeJS.Timeout | undefined;
    req = request({
      protocol: url.protocol,
      hostname: target.hostname,
      port: url.port || undefined,
      path: `${url.pathname}${url.search}`,
      method: 'POST',
      headers: { ...webhook.headers, host: url.host, 'content-length': String(body.length) },
      lookup: pinnedLookup(target),
      // A fresh connection each time: a pooled socket would skip the check of this attempt.
      agent: false,
    });
    req.on('socket', (socket) => {
      if (!socket.connecting) return;
      connect = setTimeout(() => finish(new Error(`no connection within ${limits.connectTimeoutMs} ms`)), limits.connectTimeoutMs);
      socket.once('connect', () => clearTimeout(connect));
    });
    req.on('response', (res: IncomingMessage) => {
      statusCode = res.statusCode ?? 0;
      let read = 0;
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read > limits.maxResponseBytes) finish(null);
      });
      res.on('end', () => finish(null));
      res.on('error', () => finish(null));
      res.on('close', () => finish(null));
    });
    req.on('error', (err) => finish(err));
    req.on('close', () => finish(null));
    req.end(body);
  });
}
