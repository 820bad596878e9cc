import { BlockList, isIPv4, isIPv6 } from 'node:net';

/**
 * Which IP addresses an outbound request (a webhook) may reach. Addresses arrive in canonical form
 * (from the WHATWG URL parser or from the resolver), so odd spellings (2130706433, 0x7f.1, 0177.0.0.1,
 * 127.1) have already become 127.0.0.1 by the time they are judged here.
 *
 * `private` ranges are where an on-premises receiver may live: an operator can allow them
 * (WEBHOOK_ALLOW_PRIVATE). `never` ranges (link-local with the cloud metadata service, multicast,
 * unspecified, reserved, documentation…) are refused whatever the setting.
 */
export type AddressKind = 'private' | 'never';

export interface ForbiddenAddress {
  kind: AddressKind;
  /** e.g. "a loopback address (127.0.0.1)". */
  reason: string;
}

interface Range {
  prefix: string;
  bits: number;
  kind: AddressKind;
  what: string;
}

const IPV4: Range[] = [
  { prefix: '0.0.0.0', bits: 8, kind: 'never', what: 'an unspecified ("this network") address' },
  { prefix: '10.0.0.0', bits: 8, kind: 'private', what: 'a private address' },
  { prefix: '100.64.0.0', bits: 10, kind: 'private', what: 'a shared (carrier-grade NAT) address' },
  { prefix: '127.0.0.0', bits: 8, kind: 'private', what: 'a loopback address' },
  { prefix: '169.254.0.0', bits: 16, kind: 'never', what: 'a link-local address (cloud metadata lives there)' },
  { prefix: '172.16.0.0', bits: 12, kind: 'private', what: 'a private address' },
  { prefix: '192.0.0.0', bits: 24, kind: 'never', what: 'a reserved (IETF protocol) address' },
  { prefix: '192.0.2.0', bits: 24, kind: 'never', what: 'a documentation address' },
  { prefix: '192.88.99.0', bits: 24, kind: 'never', what: 'a reserved (6to4 relay) address' },
  { prefix: '192.168.0.0', bits: 16, kind: 'private', what: 'a private address' },
  { prefix: '198.18.0.0', bits: 15, kind: 'never', what: 'a benchmarking address' },
  { prefix: '198.51.100.0', bits: 24, kind: 'never', what: 'a documentation address' },
  { prefix: '203.0.113.0', bits: 24, kind: 'never', what: 'a documentation address' },
  { prefix: '224.0.0.0', bits: 4, kind: 'never', what: 'a multicast address' },
  { prefix: '240.0.0.0', bits: 4, kind: 'never', what: 'a reserved or broadcast address' },
];

/** Inside 2000::/3 (global unicast); everything outside it that is not listed here is refused as well. */
const IPV6: Range[] = [
  { prefix: '::', bits: 128, kind: 'never', what: 'the unspecified address' },
  { prefix: '::1', bits: 128, kind: 'private', what: 'a loopback address' },
  { prefix: '::', bits: 96, kind: 'never', what: 'an IPv4-compatible address (deprecated)' },
  { prefix: '64:ff9b:1::', bits: 48, kind: 'never', what: 'a local-use NAT64 address' },
  { prefix: '100::', bits: 64, kind: 'never', what: 'a discard-only address' },
  { prefix: 'fc00::', bits: 7, kind: 'private', what: 'a unique-local address' },
  { prefix: 'fe80::', bits: 10, kind: 'never', what: 'a link-local address' },
  { prefix: 'fec0::', bits: 10, kind: 'never', what: 'a site-local address (deprecated)' },
  { prefix: 'ff00::', bits: 8, kind: 'never', what: 'a multicast address' },
  { prefix: '2001::', bits: 23, kind: 'never', what: 'a reserved (IETF protocol: Teredo, benchmarking, ORCHID) address' },
  { prefix: '2001:db8::', bits: 32, kind: 'never', what: 'a documentation address' },
  { prefix: '3fff::', bits: 20, kind: 'never', what: 'a documentation address' },
];

function blockLists(ranges: Range[], family: 'ipv4' | 'ipv6') {
  return ranges.map((range) => {
    const list = new BlockList();
    list.addSubnet(range.prefix, range.bits, family);
    return { range, list };
  });
}

const IPV4_LISTS = blockLists(IPV4, 'ipv4');
const IPV6_LISTS = blockLists(IPV6, 'ipv6');
const GLOBAL_UNICAST = new BlockList();
GLOBAL_UNICAST.addSubnet('2000::', 3, 'ipv6');

/** The eight 16-bit groups of an IPv6 address ("::ffff:1.2.3.4" forms included), zone id dropped. */
function ipv6Groups(address: string): number[] {
  let text = address.replace(/%.*$/, '').toLowerCase();
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted[1].split('.').map(Number);
    text = text.slice(0, -dotted[1].length) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const middle = tail === undefined ? [] : Array(8 - left.length - right.length).fill('0');
  return [...left, ...middle, ...right].map((g) => parseInt(g, 16));
}

function ipv4FromGroups(high: number, low: number): string {
  return [high >> 8, high & 0xff, low >> 8, low & 0xff].join('.');
}

/**
 * The IPv4 address an IPv6 address stands for, where it embeds one that a host would reach:
 * IPv4-mapped (::ffff:a.b.c.d), NAT64 well-known prefix (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::).
 */
function embeddedIpv4(groups: number[]): string | null {
  const zero = (from: number, to: number) => groups.slice(from, to).every((g) => g === 0);
  if (zero(0, 5) && groups[5] === 0xffff) return ipv4FromGroups(groups[6], groups[7]);
  if (groups[0] === 0x64 && groups[1] === 0xff9b && zero(2, 6)) return ipv4FromGroups(groups[6], groups[7]);
  if (groups[0] === 0x2002) return ipv4FromGroups(groups[1], groups[2]);
  return null;
}

/** Why an address may not be reached, or null for a public one. Anything that is not an IP address is refused. */
export function forbiddenAddress(address: string): ForbiddenAddress | null {
  if (isIPv4(address)) {
    const hit = IPV4_LISTS.find(({ list }) => list.check(address, 'ipv4'));
    return hit ? { kind: hit.range.kind, reason: `${hit.range.what} (${address})` } : null;
  }
  if (!isIPv6(address.replace(/%.*$/, ''))) return { kind: 'never', reason: `not an IP address (${address})` };
  const groups = ipv6Groups(address);
  const v4 = embeddedIpv4(groups);
  if (v4) {
    const inner = forbiddenAddress(v4);
    return inner ? { kind: inner.kind, reason: `${inner.reason.replace(/ \([^)]*\)$/, '')} (${address} embeds ${v4})` } : null;
  }
  const canonical = groups.map((g) => g.toString(16)).join(':');
  // The most specific range speaks (::1/128 before ::/96).
  const hit = IPV6_LISTS.filter(({ list }) => list.check(canonical, 'ipv6')).sort((a, b) => b.range.bits - a.range.bits)[0];
  if (hit) return { kind: hit.range.kind, reason: `${hit.range.what} (${address})` };
  if (!GLOBAL_UNICAST.check(canonical, 'ipv6')) return { kind: 'never', reason: `not a global unicast address (${address})` };
  return null;
}

/** forbiddenAddress under an operator's policy: `private` ranges pass when allowPrivate is on. */
export function refusedAddress(address: string, allowPrivate: boolean): ForbiddenAddress | null {
  const forbidden = forbiddenAddress(address);
  if (!forbidden || (allowPrivate && forbidden.kind === 'private')) return null;
  return forbidden;
}
