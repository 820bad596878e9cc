/**
 * REDIS_URL's Sentinel form, parsed without any I/O (the settings schema checks it with this too):
 *
 *   redis-sentinel://[[user]:password@]host:port,host:port,…/<master name>[/db]
 */

export const SENTINEL_SCHEME = 'redis-sentinel:';

export interface SentinelTarget {
  sentinels: Array<{ host: string; port: number }>;
  name: string;
  db: number;
  username?: string;
  password?: string;
}

/** The Sentinel form of REDIS_URL, or null for a plain redis:// URL. */
export function parseSentinelUrl(url: string): SentinelTarget | null {
  if (!url.startsWith(SENTINEL_SCHEME)) return null;
  // URL() cannot parse a host list; take the authority apart by hand.
  const rest = url.slice(SENTINEL_SCHEME.length).replace(/^\/\//, '');
  const slash = rest.indexOf('/');
  if (slash < 0) throw new Error(`REDIS_URL ${redact(url)}: the master name is missing (redis-sentinel://host:port,…/<master name>)`);
  let authority = rest.slice(0, slash);
  const [name, db = '0', ...extra] = rest.slice(slash + 1).split('/');
  if (!name || extra.length || !/^\d+$/.test(db)) throw new Error(`REDIS_URL ${redact(url)}: expected …/<master name>[/<db>]`);
  let username: string | undefined;
  let password: string | undefined;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    const credentials = authority.slice(0, at);
    authority = authority.slice(at + 1);
    const colon = credentials.indexOf(':');
    username = decodeURIComponent(colon < 0 ? credentials : credentials.slice(0, colon)) || undefined;
    password = colon < 0 ? undefined : decodeURIComponent(credentials.slice(colon + 1));
  }
  const sentinels = authority.split(',').map((entry) => {
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(entry.trim());
    if (!m) throw new Error(`REDIS_URL ${redact(url)}: "${entry}" is not host:port`);
    return { host: m[1], port: Number(m[2]) };
  });
  return { sentinels, name: decodeURIComponent(name), db: Number(db), username, password };
}

/** The URL with its password hidden: REDIS_URL may carry one. */
export function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}
