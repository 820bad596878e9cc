import IORedis from 'ioredis';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, freePort, manage, stopProcess, type ManagedProcess } from '../support/stack';
import {
  countLoss,
  create,
  type FaultStack,
  finished,
  LONG,
  lossLook,
  lostJobs,
  midRun,
  poll,
  recordScenario,
  reportMeasurements,
  startFaultStack,
  startSupervisor,
  TINY,
} from './fault-tools';

/**
 * Scenario 15: Redis as production runs it, a master with a replica under three Sentinels (all from
 * Debian's redis-server, `--sentinel` for the Sentinels), on loopback; the services reach it through
 * REDIS_URL=redis-sentinel://… The master is killed mid-run while its replica lags (it was stopped
 * while jobs were accepted, so the new master never saw them): the Sentinels promote the replica, the
 * services follow it, and the reconciler puts back what the new master lost.
 */

jest.setTimeout(600_000);

const FILE = 'sentinel';
const MASTER_NAME = 'flexy';

let stack: FaultStack;
let replica: ManagedProcess;
let replicaPort: number;
const sentinels: Array<{ port: number; p: ManagedProcess }> = [];

async function sentinelMaster(): Promise<number | null> {
  const s = new IORedis({ port: sentinels[0].port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
  s.on('error', () => undefined);
  try {
    await s.connect();
    const addr = (await s.call('SENTINEL', 'get-master-addr-by-name', MASTER_NAME)) as [string, string] | null;
    return addr ? Number(addr[1]) : null;
  } finally {
    s.disconnect();
  }
}

/** A replica of the stack's Redis and three Sentinels watching it; answers the services' REDIS_URL. */
async function sentinelSetup({ port, dataDir }: { port: number; dataDir: string }): Promise<NodeJS.ProcessEnv> {
  replicaPort = await freePort();
  const replicaDir = join(dataDir, 'replica');
  mkdirSync(replicaDir, { recursive: true });
  replica = manage(`redis-replica-${replicaPort}`, 'redis-server', [
    '--port', String(replicaPort), '--bind', '127.0.0.1', '--dir', replicaDir, '--save', '', '--appendonly', 'yes',
    '--maxmemory-policy', 'noeviction', '--replicaof', '127.0.0.1', String(port),
  ], process.env);
  await replica.waitFor(/MASTER <-> REPLICA sync: Finished with success/, 30_000);
  for (let i = 0; i < 3; i++) {
    const sentinelPort = await freePort();
    const dir = join(dataDir, `sentinel-${i}`);
    mkdirSync(dir, { recursive: true });
    // Sentinels rewrite their configuration file as they learn: one writable file each.
    writeFileSync(join(dir, 'sentinel.conf'), [
      `port ${sentinelPort}`, 'bind 127.0.0.1', `dir ${dir}`,
      `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${port} 2`,
      `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
      `sentinel failover-timeout ${MASTER_NAME} 10000`,
      `sentinel parallel-syncs ${MASTER_NAME} 1`,
      '',
    ].join('\n'));
    const p = manage(`redis-sentinel-${sentinelPort}`, 'redis-server', [join(dir, 'sentinel.conf'), '--sentinel'], process.env);
    await p.waitFor(/Sentinel ID is/, 10_000);
    sentinels.push({ port: sentinelPort, p });
  }
  // Each Sentinel has found the replica and the other Sentinels before anything depends on them.
  await poll('the Sentinels to know the replica and each other', async () => {
    const s = new IORedis({ port: sentinels[0].port, host: '127.0.0.1', maxRetriesPerRequest: 0 });
    s.on('error', () => undefined);
    try {
      const replicas = (await s.call('SENTINEL', 'replicas', MASTER_NAME)) as unknown[];
      const others = (await s.call('SENTINEL', 'sentinels', MASTER_NAME)) as unknown[];
      return replicas.length === 1 && others.length === 2;
    } finally {
      s.disconnect();
    }
  }, 60_000, 200);
  return { REDIS_URL: `redis-sentinel://${sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${MASTER_NAME}` };
}

reportMeasurements(FILE);

beforeAll(async () => {
  stack = await startFaultStack({}, { aroundRedis: sentinelSetup });
  await startSupervisor(stack, 'host-a');
}, 300_000);

afterAll(async () => {
  await stack?.stop();
  await Promise.all([replica && stopProcess(replica), ...sentinels.map((s) => stopProcess(s.p))]);
});

it('15. a Sentinel failover mid-run, to a replica that missed the last writes: the services follow it, the reconciler puts back what it lost', async () => {
  await recordScenario(FILE, '15. Sentinel failover mid-run (master SIGKILLed; its replica had missed the last 6 accepted jobs)', async (row) => {
    expect(stack.redisUrl).toMatch(/^redis-sentinel:\/\//);
    const ids = [await create(stack, { ...LONG, prompt: 'sentinel failover long' })];
    for (let i = 0; i < 3; i++) ids.push(await create(stack, { ...TINY, prompt: `sentinel before ${i}`, seed: i }));
    await midRun(stack, ids[0]);

    // The replica falls behind: what is accepted now exists in the database and on the master only.
    // A stopped replica's socket still takes in what the master sends (the kernel buffers it), so a
    // large write goes first and fills those buffers: what follows stays in the master's memory, and
    // dies with it.
    process.kill(replica.child.pid!, 'SIGSTOP');
    const unseen: string[] = [];
    try {
      const master = new IORedis({ host: '127.0.0.1', port: stack.redisPort, maxRetriesPerRequest: 0 });
      await master.set('flexy:test:replication-backlog', Buffer.alloc(32 * 1024 * 1024, 1));
      master.disconnect();
      for (let i = 0; i < 6; i++) unseen.push(await create(stack, { ...TINY, prompt: `sentinel unseen ${i}`, seed: 10 + i }));
      ids.push(...unseen);
      const t0 = Date.now();
      process.kill(stack.redis.child.pid!, 'SIGKILL');
      process.kill(replica.child.pid!, 'SIGCONT');
      const promotedPort = await poll('the Sentinels to promote the replica', async () => ((await sentinelMaster()) === replicaPort ? replicaPort : null), 60_000, 100);
      const promotedAt = Date.now();
      expect(promotedPort).toBe(replicaPort);

      // The services follow the new master: creates are accepted again, through the same REDIS_URL.
      const after = await poll('a create accepted through the new master', async () => {
        const res = await api(stack, 'POST', '/v1/generations', { ...TINY, prompt: 'sentinel after the failover', seed: 99 });
        return res.status === 202 ? (res.json.id as string) : null;
      }, 60_000, 500);
      ids.push(after);
      for (const id of ids) await finished(stack, id, 300_000);
      const doneAt = Date.now();
      const lost = await lostJobs(lossLook(stack), ids);
      countLoss(row, lost);
      const sup = stack.supervisors[0];
      // Which jobs the new master lacked, as the reconciler found them (it says so for each one it puts back).
      const missing = await poll('the reconciler\'s word on the jobs the new master lacked', async () => {
        const n = unseen.filter((id) => sup.output.some((l) => l.includes(`${id} was queued in the database with no BullMQ job`))).length;
        return n > 0 ? n : null;
      }, 30_000, 100);
      Object.assign(row, {
        outcome:
          `the Sentinels promoted the replica ${((promotedAt - t0) / 1000).toFixed(1)} s after the kill; gateway and supervisor followed it through REDIS_URL=redis-sentinel://…; ` +
          `${missing} of the 6 jobs accepted while it lagged were missing from the new master and put back by the reconciler; all ${ids.length} accepted jobs succeeded once each`,
        detectionMs: promotedAt - t0,
        recoveryMs: doneAt - t0,
      });
    } finally {
      try {
        process.kill(replica.child.pid!, 'SIGCONT');
      } catch {
        // gone already
      }
    }
  });
});
