import { lookup } from 'node:dns/promises';
import { isIPv4 } from 'node:net';
import { refusedAddress, type AddressKind } from './address-policy';

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Every address a host name resolves to. */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export interface WebhookPolicy {
  /** WEBHOOK_ALLOW_PRIVATE: loopback, private, CGNAT and unique-local receivers are allowed (on-premises). */
  allowPrivate: boolean;
  /** Defaults to the system resolver (dns.lookup, all addresses) with LOOKUP_TIMEOUT_MS. */
  resolve?: Resolver;
}

/** The target is forbidden: trying again will not help. */
export class WebhookTargetRefused extends Error {
  override name = 'WebhookTargetRefused';
}

/** The host name did not resolve (unknown name, no DNS, timeout): it may next time. */
export class WebhookLookupFailed extends Error {
  override name = 'WebhookLookupFailed';
}

/** A checked target: connect to `address` itself, and name `url.host` in the Host header and TLS. */
export interface WebhookTarget {
  url: URL;
  /** The host without IPv6 brackets or trailing dots. */
  hostname: string;
  address: string;
  family: 4 | 6;
}

export const LOOKUP_TIMEOUT_MS = 2000;

/**
 * The form of a webhook URL, as the API's JSON Schema states it: http or https, a host (and port)
 * without credentials, then an optional path, query or fragment, in the characters RFC 3986 allows
 * (an international name goes in its punycode form). Whether its target may be reached is checked
 * on top of this (resolveWebhookTarget).
 */
export const WEBHOOK_URL_PATTERN = "^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9._~!$&'()*+,;=:%\\[\\]-]+(?:[/?#][A-Za-z0-9._~!$&'()*+,;=:@/?#%\\[\\]-]*)?$";
export const WEBHOOK_URL_MAX_LENGTH = 2000;

/** Resolves with dns.lookup (the hosts file included, as a connection would), giving up after timeoutMs. */
export function systemResolver(timeoutMs = LOOKUP_TIMEOUT_MS): Resolver {
  return async (hostname) => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new WebhookLookupFailed(`host ${hostname} did not resolve within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const found = await Promise.race([lookup(hostname, { all: true, verbatim: true }), timeout]);
      return found.map(({ address, family }) => ({ address, family: family === 6 ? 6 : 4 }));
    } catch (err) {
      if (err instanceof WebhookLookupFailed) throw err;
      throw new WebhookLookupFailed(`host ${hostname} did not resolve (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    } finally {
      clearTimeout(timer);
    }
  };
}

function refuse(what: string, kind: AddressKind): never {
  throw new WebhookTargetRefused(`${what}; webhooks go only to public addresses${kind === 'private' ? ' (this service does not allow private targets)' : ''}`);
}

/**
 * Parses the URL as a client would (the WHATWG parser: 2130706433, 0x7f.1, 0177.0.0.1 and 127.1 all
 * become 127.0.0.1; IPv6 is compressed), refuses what may not be reached, and resolves a host name to
 * every address, each of which must be allowed. Throws WebhookTargetRefused or WebhookLookupFailed.
 */
export async function resolveWebhookTarget(raw: string, policy: WebhookPolicy): Promise<WebhookTarget> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new WebhookTargetRefused('must be an http(s) URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new WebhookTargetRefused('must be an http(s) URL');
  if (url.username || url.password) throw new WebhookTargetRefused('must not contain credentials (user:password@)');
  const literal = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : isIPv4(url.hostname) ? url.hostname : null;
  if (literal) {
    const refused = refusedAddress(literal, policy.allowPrivate);
    if (refused) refuse(`points at ${refused.reason}`, refused.kind);
    return { url, hostname: literal, address: literal, family: literal.includes(':') ? 6 : 4 };
  }
  const hostname = url.hostname.replace(/\.+$/, '');
  if (!hostname) throw new WebhookTargetRefused('must be an http(s) URL');
  // Resolvers answer these with loopback without asking DNS (RFC 6761).
  if ((hostname === 'localhost' || hostname.endsWith('.localhost')) && !policy.allowPrivate) refuse(`points at a loopback name (${hostname})`, 'private');
  const addresses = await (policy.resolve ?? systemResolver())(hostname);
  if (addresses.length === 0) throw new WebhookLookupFailed(`host ${hostname} has no address`);
  for (const { address } of addresses) {
    const refused = refusedAddress(address, policy.allowPrivate);
    if (refused) refuse(`host ${hostname} resolves to ${refused.reason}`, refused.kind);
  }
  return { url, hostname, ...addresses[0] };
}

export interface FieldProblem {
  field: string;
  message: string;
}

/**
 * The create-time check of a webhook URL: a problem naming the field, or null when the URL may be
 * stored. A host name that does not resolve now is accepted: DNS may be down or split-horizon at
 * this moment, and delivery resolves and checks again before every attempt.
 */
export async function webhookUrlProblem(raw: unknown, policy: WebhookPolicy, field = 'webhook_url'): Promise<FieldProblem | null> {
  if (typeof raw !== 'string') return { field, message: `${field} must be an http(s) URL` };
  try {
    await resolveWebhookTarget(raw, policy);
    return null;
  } catch (err) {
    if (err instanceof WebhookTargetRefused) return { field, message: `${field} ${err.message}` };
    if (err instanceof WebhookLookupFailed) return null;
    throw err;
  }
}
