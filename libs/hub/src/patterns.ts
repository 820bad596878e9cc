/**
 * Allow-pattern matching with the semantics of the hub's own clients (Python's fnmatch, as
 * `snapshot_download(allow_patterns=…)` uses it): `*` also crosses `/`, `?` is one character,
 * `[seq]` / `[!seq]` are classes, and a pattern ending in `/` means everything below that folder.
 * Keeping those semantics means a catalog pattern selects the same files here as in Python.
 */

const cache = new Map<string, RegExp>();

function translate(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') {
      source += '.*';
    } else if (c === '?') {
      source += '.';
    } else if (c === '[') {
      const close = pattern.indexOf(']', i + 2);
      if (close === -1) {
        source += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, close).replace(/\\/g, '\\\\');
      if (body.startsWith('!')) body = '^' + body.slice(1);
      else if (body.startsWith('^')) body = '\\' + body;
      source += `[${body}]`;
      i = close;
    } else {
      source += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
    }
  }
  return new RegExp(`^(?:${source})$`, 's');
}

export function matchesPattern(path: string, pattern: string): boolean {
  const normalised = pattern.endsWith('/') ? pattern + '*' : pattern;
  let re = cache.get(normalised);
  if (!re) {
    re = translate(normalised);
    cache.set(normalised, re);
  }
  return re.test(path);
}

export function isAllowed(path: string, allowPatterns: readonly string[]): boolean {
  return allowPatterns.some((p) => matchesPattern(path, p));
}
