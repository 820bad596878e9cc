/**
 * Gateway throughput: POST /v1/generations (validated, recorded in SQLite, queued in Redis) under
 * autocannon, beside a bare NestJS route measured in the same run on the same machine. Measured
 * twice: in open mode (anonymous), and on the production path (AUTH_MODE=keys: every request
 * presents a key with generous limits, so its lookup, ownership and quota charge are paid, and
 * nothing is refused).
 *
 *   npm run bench:gateway
 */
import autocannon from 'autocannon';
import { inflightKey } from '@flexy/contracts';
import Database from 'better-sqlite3';
import Redis from 'ioredis';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createKey } from '../test/support/keys';
import { freePort, manage, ROOT, startStack, stopProcess, type Stack } from '../test/support/stack';
import { recordResult } from './support/record-result';

const DURATION_S = Number(process.env.BENCH_DURATION_S || 15);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS || 32);
const BODY = JSON.stringify({ prompt: 'a lighthouse at dawn, oil painting', engine: 'flux1_dev', seed: 42, steps: 28, width: 1024, height: 1024 });

/** Limits no run of this benchmark reaches: the quota is charged on every create, never refused. */
const GENEROUS = { rate: 1_000_000_000, concurrency: 1_000_000_000 };

const CLOCK_TICKS_PER_S = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/**
 * CPU time (user + system, ms) used so far by a process and everything it started (the gateway's
 * cluster workers). On a shared machine the rate swings with other work; CPU time per request much less.
 */
function treeCpuMs(root: number): number {
  const stats = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map((pid) => {
      try {
        const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
        return { pid: Number(pid), ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) };
      } catch {
        return null; // ended meanwhile
      }
    })
    .filter((p) => p !== null);
  const inTree = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of stats) {
      if (inTree.has(p.pid) || !inTree.has(p.ppid)) continue;
      inTree.add(p.pid);
      grew = true;
    }
  }
  return (stats.filter((p) => inTree.has(p.pid)).reduce((sum, p) => sum + p.ticks, 0) * 1000) / CLOCK_TICKS_PER_S;
}

async function load(url: string, headers: Record<string, string> = {}, serverPid?: number) {
  const cpuBefore = serverPid ? treeCpuMs(serverPid) : 0;
  const r = await autocannon({
    url,
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: BODY,
    connections: CONNECTIONS,
    duration: DURATION_S,
  });
  const ok = r['2xx'];
  const cpuMs = serverPid ? treeCpuMs(serverPid) - cpuBefore : null;
  return {
    requests_per_s: Math.round(r.requests.average),
    // The server's own CPU time per answered request (requests still in flight at the end add a little).
    server_cpu_ms_per_request: cpuMs === null || ok === 0 ? null : Math.round((cpuMs / ok) * 1000) / 1000,
    latency_ms: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max },
    responses_2xx: ok,
    non_2xx: r.non2xx,
    errors: r.errors,
  };
}

async function main(): Promise<void> {
  const port = await freePort();
  const bare = manage('bare-nest', process.execPath, [join(ROOT, 'dist/bench/support/bare-nest.js')], { ...process.env, PORT: String(port) });
  await bare.waitFor(/bare nest listening/, 30_000);
  // Gateway alone: no supervisor drains the queue, so every request pays the full validate-record-queue path.
  const gateway = async (processes: number) => {
    const stack = await startStack({ supervisors: 0, env: { GATEWAY_PROCESSES: String(processes) } });
    try {
      await load(`${stack.url}/v1/generations`); // warm-up, discarded
      return await load(`${stack.url}/v1/generations`, {}, stack.gateway.child.pid);
    } finally {
      await stack.stop();
    }
  };
  const withKeys = async (processes: number) => {
    const stack = await startStack({ supervisors: 0, env: { GATEWAY_PROCESSES: String(processes), AUTH_MODE: 'keys' } });
    try {
      const key = await createKey(stack, 'bench', GENEROUS);
      const warmUp = await load(`${stack.url}/v1/generations`, key.auth);
      const measured = await load(`${stack.url}/v1/generations`, key.auth, stack.gateway.child.pid);
      return { ...measured, charged: await chargedTo(stack, key.id, warmUp.responses_2xx + measured.responses_2xx) };
    } finally {
      await stack.stop();
    }
  };
  let bareResult;
  try {
    await load(`http://127.0.0.1:${port}/bare`); // warm-up, discarded
    bareResult = await load(`http://127.0.0.1:${port}/bare`, {}, bare.child.pid);
  } finally {
    await stopProcess(bare);
  }
  const gatewayResult = await gateway(1);
  const keysResult = await withKeys(1);
  // One process per core (GATEWAY_PROCESSES=auto): how a deployment on this machine would run it.
  const processes = availableParallelism();
  const clusterResult = processes > 1 ? await gateway(processes) : null;
  const keysClusterResult = processes > 1 ? await withKeys(processes) : null;
  const result = {
    route: 'POST /v1/generations (validated, recorded in SQLite, queued in Redis)',
    gateway: gatewayResult,
    gateway_keys: keysResult,
    gateway_processes: clusterResult ? { processes, ...clusterResult } : null,
    gateway_keys_processes: keysClusterResult ? { processes, ...keysClusterResult } : null,
    bare_nest: bareResult,
    ratio_to_bare: Math.round((gatewayResult.requests_per_s / bareResult.requests_per_s) * 1000) / 1000,
    keys_ratio_to_bare: Math.round((keysResult.requests_per_s / bareResult.requests_per_s) * 1000) / 1000,
    connections: CONNECTIONS,
    duration_s: DURATION_S,
  };
  recordResult('gateway', result, 'npm run bench:gateway');
}

/**
 * Proof that the production path did its work: every create is recorded as the key's and holds one
 * of its concurrent slots in Redis (nothing drains them here). Requests still in flight when the
 * load stopped are served after it, so the counts settle at or a little above what the load counted.
 */
async function chargedTo(stack: Stack, keyId: string, answered2xx: number) {
  const db = new Database(join(stack.dataDir, 'flexyface.db'), { readonly: true });
  const redis = new Redis(stack.redisUrl);
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const recorded = (db.prepare('SELECT COUNT(*) AS n FROM "Generation" WHERE apiKeyId = ?').get(keyId) as { n: number }).n;
      const inFlight = await redis.zcard(inflightKey(keyId));
      if (recorded === inFlight && recorded >= answered2xx) return { answered_2xx: answered2xx, recorded_as_owner: recorded, quota_slots_taken: inFlight };
      if (Date.now() > deadline) throw new Error(`${answered2xx} creates answered 2xx, ${recorded} recorded as the key's, ${inFlight} charged to its quota`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    db.close();
    redis.disconnect();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
