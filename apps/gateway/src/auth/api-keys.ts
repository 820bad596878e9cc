import { createHash, randomBytes } from 'node:crypto';

/** Keys look like `ffk_<8 hex prefix>_<48 hex secret>`: the prefix is shown, only the hash is stored. */
export function mintApiKey(): { key: string; prefix: string; hash: string } {
  const prefix = randomBytes(4).toString('hex');
  const key = `ffk_${prefix}_${randomBytes(24).toString('hex')}`;
  return { key, prefix, hash: hashApiKey(key) };
}

/** Keys carry 192 random bits, so a plain SHA-256 is enough: there is nothing to brute-force. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}
