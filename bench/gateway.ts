/**
 * Gateway throughput: POST /v1/generations (validated, recorded in SQLite, queued in Redis) under
 * autocannon, beside a bare NestJS route measured in the same run on the same machine.
 *
 *   npm run bench:gateway
 */
import autocannon from 'autocannon';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { freePort, manage, ROOT, startStack, stopProcess } from '../test/support/stack';
import { recordResult } from './support/record-result';

const DURATION_S = Number(process.env.BENCH_DURATION_S || 15);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS || 32);
const BODY = JSON.stringify({ prompt: 'a lighthouse at dawn, oil painting', engine: 'flux1_dev', seed: 42, steps: 28, width: 1024, height: 1024 });

async function load(url: string) {
  const r = await autocannon({
    url,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: BODY,
    connections: CONNECTIONS,
    duration: DURATION_S,
  });
  const ok = r['2xx'];
  return {
    requests_per_s: Math.round(r.requests.average),
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
      return await load(`${stack.url}/v1/generations`);
    } finally {
      await stack.stop();
    }
  };
  let bareResult;
  try {
    await load(`http://127.0.0.1:${port}/bare`); // warm-up, discarded
    bareResult = await load(`http://127.0.0.1:${port}/bare`);
  } finally {
    await stopProcess(bare);
  }
  const gatewayResult = await gateway(1);
  // One process per core (GATEWAY_PROCESSES=auto): how a deployment on this machine would run it.
  const processes = availableParallelism();
  const clusterResult = processes > 1 ? await gateway(processes) : null;
  const result = {
    route: 'POST /v1/generations (validated, recorded in SQLite, queued in Redis)',
    gateway: gatewayResult,
    gateway_processes: clusterResult ? { processes, ...clusterResult } : null,
    bare_nest: bareResult,
    ratio_to_bare: Math.round((gatewayResult.requests_per_s / bareResult.requests_per_s) * 1000) / 1000,
    connections: CONNECTIONS,
    duration_s: DURATION_S,
  };
  recordResult('gateway', result, 'npm run bench:gateway');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
