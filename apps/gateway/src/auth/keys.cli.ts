/**
 * API key administration:
 *   npm run keys -- create --name NAME [--role user|admin|readonly] [--rate PER_MINUTE] [--concurrency JOBS]
 *   npm run keys -- list
 *   npm run keys -- revoke <id | prefix>
 * The key is printed once at creation; only its hash is stored.
 */
import { loadConfig, orExitOnBadConfig } from '@flexy/config';
import { applyMigrations, createDatabaseClient } from '@flexy/persistence';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { mintApiKey } from './api-keys';

const ROLES = ['user', 'admin', 'readonly'] as const;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { name: { type: 'string' }, role: { type: 'string', default: 'user' }, rate: { type: 'string', default: '60' }, concurrency: { type: 'string', default: '4' } },
  });
  const config = orExitOnBadConfig('keys', () => loadConfig());
  await applyMigrations(config.databaseUrl);
  const db = createDatabaseClient(config.databaseUrl);
  try {
    switch (command) {
      case 'create': {
        if (!values.name) throw new Error('--name is required');
        if (!ROLES.includes(values.role as (typeof ROLES)[number])) throw new Error(`--role must be one of ${ROLES.join(', ')}`);
        const rate = Number(values.rate);
        const concurrency = Number(values.concurrency);
        if (!Number.isInteger(rate) || rate < 1) throw new Error('--rate must be a positive integer');
        if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error('--concurrency must be a positive integer');
        const minted = mintApiKey();
        const key = await db.apiKey.create({
          data: {
            id: `key_${randomUUID().replace(/-/g, '').slice(0, 16)}`,
            name: values.name,
            keyHash: minted.hash,
            prefix: minted.prefix,
            role: values.role as (typeof ROLES)[number],
            rateLimitPerMinute: rate,
            maxConcurrentJobs: concurrency,
          },
        });
        console.log(JSON.stringify({ id: key.id, name: key.name, role: key.role, key: minted.key, rate_limit_per_minute: rate, max_concurrent_jobs: concurrency }));
        console.error('Store this key now: it is not shown again.');
        return 0;
      }
      case 'list': {
        const keys = await db.apiKey.findMany({ orderBy: { createdAt: 'asc' } });
        for (const k of keys) {
          console.log(`${k.id}  ffk_${k.prefix}_…  ${k.role.padEnd(8)}  ${k.rateLimitPerMinute}/min  ${k.maxConcurrentJobs} jobs  ${k.revokedAt ? 'revoked' : 'active'}  ${k.name}`);
        }
        return 0;
      }
      case 'revoke': {
        const target = positionals[0];
        if (!target) throw new Error('revoke needs a key id or prefix');
        const { count } = await db.apiKey.updateMany({ where: { OR: [{ id: target }, { prefix: target }], revokedAt: null }, data: { revokedAt: new Date() } });
        console.log(count ? `revoked ${target}` : `no active key matches ${target}`);
        return count ? 0 : 1;
      }
      default:
        console.error('usage: npm run keys -- create --name NAME [--role user|admin|readonly] [--rate N] [--concurrency N] | list | revoke <id|prefix>');
        return 2;
    }
  } finally {
    await db.$disconnect();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`error: ${(err as Error).message}`);
    process.exit(1);
  },
);
