/**
 * Orchestration overhead: (HTTP submit → image ready) minus the worker's own pipeline time
 * (load + text encode + denoise + decode, measured inside Python), over sequential demo jobs on the
 * real stack (gateway, Redis, supervisor, Python worker). `Prefer: wait` returns the finished
 * generation, so "ready" is when the client holds the finished record with its image URL.
 *
 *   npm run bench:orchestration [-- --jobs 60]
 */
import { startStack } from '../test/support/stack';
import { recordResult } from './support/record-result';

const args = process.argv.slice(2);
const JOBS = Number(args[args.indexOf('--jobs') + 1] || 60);
const WARMUP = 5;
const REQUEST = { prompt: 'orchestration probe', engine: 'flux1_dev', steps: 1, width: 64, height: 64 };

function percentile(sorted: number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Math.round(sorted[i] * 100) / 100;
}

async function main(): Promise<void> {
  const stack = await startStack();
  const overhead: number[] = [];
  const endToEnd: number[] = [];
  const pipeline: number[] = [];
  try {
    for (let i = 0; i < WARMUP + JOBS; i++) {
      const t0 = performance.now();
      const res = await fetch(`${stack.url}/v1/generations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', prefer: 'wait=60' },
        body: JSON.stringify({ ...REQUEST, seed: i }),
      });
      const g = (await res.json()) as { status: string; timings: Record<string, number> };
      const elapsed = performance.now() - t0;
      if (res.status !== 200 || g.status !== 'succeeded') throw new Error(`job ${i}: ${res.status} ${JSON.stringify(g)}`);
      if (i < WARMUP) continue;
      const t = g.timings;
      const inWorker = t.load_ms + t.text_encode_ms + t.denoise_ms + t.decode_ms;
      endToEnd.push(elapsed);
      pipeline.push(inWorker);
      overhead.push(elapsed - inWorker);
    }
  } finally {
    await stack.stop();
  }
  const sort = (xs: number[]) => [...xs].sort((a, b) => a - b);
  const o = sort(overhead);
  const result = {
    jobs: JOBS,
    overhead_ms: { p50: percentile(o, 50), p95: percentile(o, 95), max: percentile(o, 100) },
    end_to_end_ms: { p50: percentile(sort(endToEnd), 50), p95: percentile(sort(endToEnd), 95) },
    worker_pipeline_ms: { p50: percentile(sort(pipeline), 50) },
    request: REQUEST,
  };
  recordResult('orchestration', result, 'npm run bench:orchestration');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
