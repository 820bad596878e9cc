import type { NextFunction, Request, Response } from 'express';
import { isIP } from 'node:net';

/** Host names that can only mean this machine. */
function isLoopbackHost(hostHeader: string | undefined): boolean {
  if (!hostHeader) return false;
  // Strip the port; an IPv6 literal comes in brackets.
  const host = (hostHeader.startsWith('[') ? hostHeader.slice(1, hostHeader.indexOf(']')) : hostHeader.replace(/:\d*$/, '')).toLowerCase().replace(/\.$/, '');
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return isIP(host) === 6 && host === '::1';
}

/**
 * Open mode (no API keys) is safe only while nothing but this machine can reach the gateway. A web
 * page elsewhere can still make a browser here send requests to a name it controls that resolves to
 * 127.0.0.1 (DNS rebinding); such requests carry that name in Host, so they are refused.
 */
export function loopbackHostOnly() {
  return (req: Request, res: Response, next: NextFunction) => {
    if (isLoopbackHost(req.headers.host)) return next();
    res.status(403).json({ statusCode: 403, error: 'Forbidden', message: 'open mode serves loopback host names only (Host must be localhost or a loopback address); use API keys to serve other names' });
  };
}

/** Express `trust proxy` from TRUST_PROXY: a hop count, true/false, or a list of addresses, subnets and names (loopback, uniquelocal). */
export function trustProxySetting(value: string): boolean | number | string[] {
  const v = value.trim();
  if (v === '' || v === 'false') return false;
  if (v === 'true') return true;
  if (/^\d+$/.test(v)) return Number(v);
  return v.split(',').map((s) => s.trim()).filter(Boolean);
}
