import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, type Stack } from './stack';

export type KeyRole = 'user' | 'admin' | 'readonly';

export interface TestKey {
  id: string;
  key: string;
  /** The key's Authorization header. */
  auth: Record<string, string>;
}

/** A key made the way an operator makes one (`npm run keys -- create`), in the stack's database. */
export function createKey(stack: Pick<Stack, 'env'>, name: string, options: { role?: KeyRole; rate?: number; concurrency?: number } = {}): TestKey {
  const out = execFileSync(
    process.execPath,
    [
      join(ROOT, 'dist/apps/gateway/src/auth/keys.cli.js'),
      'create',
      '--name', name,
      '--role', options.role ?? 'user',
      '--rate', String(options.rate ?? 1000),
      '--concurrency', String(options.concurrency ?? 100),
    ],
    { env: stack.env, encoding: 'utf8' },
  );
  const { id, key } = JSON.parse(out.trim().split('\n').pop()!) as { id: string; key: string };
  return { id, key, auth: { authorization: `Bearer ${key}` } };
}
