import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT, type Stack } from './stack';

const run = promisify(execFile);

export type KeyRole = 'user' | 'admin' | 'readonly';

export interface KeySpec {
  role?: KeyRole;
  rate?: number;
  concurrency?: number;
}

export interface TestKey {
  id: string;
  key: string;
  /** The key's Authorization header. */
  auth: Record<string, string>;
}

/** A key made the way an operator makes one (`npm run keys -- create`), in the stack's database. */
export async function createKey(stack: Pick<Stack, 'env'>, name: string, spec: KeySpec = {}): Promise<TestKey> {
  const { stdout } = await run(
    process.execPath,
    [
      join(ROOT, 'dist/apps/gateway/src/auth/keys.cli.js'),
      'create',
      '--name', name,
      '--role', spec.role ?? 'user',
      '--rate', String(spec.rate ?? 1000),
      '--concurrency', String(spec.concurrency ?? 100),
    ],
    { env: stack.env, encoding: 'utf8' },
  );
  const { id, key } = JSON.parse(stdout.trim().split('\n').pop()!) as { id: string; key: string };
  return { id, key, auth: { authorization: `Bearer ${key}` } };
}

/**
 * Several keys at once, a few CLI processes at a time (each is a Node start-up; on a busy machine
 * one after another costs seconds per key).
 */
export async function createKeys<N extends string>(stack: Pick<Stack, 'env'>, specs: Record<N, KeySpec>, parallel = 4): Promise<Record<N, TestKey>> {
  const names = Object.keys(specs) as N[];
  const keys = {} as Record<N, TestKey>;
  let next = 0;
  const lane = async () => {
    while (next < names.length) {
      const name = names[next++];
      keys[name] = await createKey(stack, name, specs[name]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, names.length) }, lane));
  return keys;
}
