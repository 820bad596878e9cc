/**
 * Off loopback, deliveries signed with the public development secret could be forged by anyone:
 * the gateway and the supervisor refuse to start without a WEBHOOK_SECRET of at least 32 bytes.
 */
import { loadConfig } from '@flexy/config';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from '../support/stack';

jest.setTimeout(120_000);

const ENTRY_POINTS = { gateway: 'dist/apps/gateway/src/main.js', supervisor: 'dist/apps/supervisor/src/main.js' };

/** Starts an entry point with nothing listening on the Redis port: it must stop before it needs Redis. */
function start(entry: string, env: NodeJS.ProcessEnv) {
  const { WEBHOOK_SECRET: _inherited, ...rest } = process.env;
  return spawnSync(process.execPath, [join(ROOT, entry)], {
    env: { ...rest, REDIS_URL: 'redis://127.0.0.1:1', DATABASE_URL: 'file:/nonexistent/flexyface.db', ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
}

describe.each(Object.entries(ENTRY_POINTS))('%s', (_name, entry) => {
  it.each([
    ['no secret', { HOST: '0.0.0.0' }, /HOST is 0\.0\.0\.0/],
    ['a 31-byte secret', { HOST: '0.0.0.0', WEBHOOK_SECRET: 'x'.repeat(31) }, /HOST is 0\.0\.0\.0/],
    ['no secret, Redis on another host', { HOST: '127.0.0.1', REDIS_URL: 'redis://redis.internal:6379' }, /REDIS_URL is on redis\.internal/],
  ])('refuses to start off loopback with %s, naming WEBHOOK_SECRET', (_case, env, where) => {
    const run = start(entry, env);
    expect(run.status).not.toBe(0);
    expect(run.signal).toBeNull();
    expect(run.stderr).toMatch(/WEBHOOK_SECRET must be set to at least 32 bytes off loopback/);
    expect(run.stderr).toMatch(where);
  });
});

describe('loadConfig', () => {
  it('takes a secret of 32 bytes or more off loopback', () => {
    const secret = 'é'.repeat(16); // 32 bytes in UTF-8
    expect(loadConfig({ HOST: '0.0.0.0', WEBHOOK_SECRET: secret }).webhookSecret).toBe(secret);
  });

  it('keeps the development secret on loopback', () => {
    expect(loadConfig({ HOST: '127.0.0.1' }).webhookSecret).toBe('flexyface-dev-webhook-secret');
    expect(loadConfig({ HOST: '::1', WEBHOOK_SECRET: 'short' }).webhookSecret).toBe('short');
  });

  it('reads WEBHOOK_ALLOW_PRIVATE, off by default', () => {
    expect(loadConfig({}).webhookAllowPrivate).toBe(false);
    expect(loadConfig({ WEBHOOK_ALLOW_PRIVATE: 'true' }).webhookAllowPrivate).toBe(true);
    expect(() => loadConfig({ WEBHOOK_ALLOW_PRIVATE: 'yes' })).toThrow(/WEBHOOK_ALLOW_PRIVATE must be "true" or "false"/);
  });
});
