/**
 * The GPU tier: the real stack — a private redis-server, SQLite, the gateway, a supervisor with
 * WORKER_DEVICES=auto (one worker per visible GPU) — over real-size random snapshots in the hub
 * layouts, checked over HTTP:
 *
 *   npm run test:gpu                      # on a GPU host (node dist/test/gpu/tier.js)
 *   npm run test:gpu -- --reduced         # the same script on a CPU: tiny snapshots, 64 px, 2 steps
 *   bash scripts/gpu-host.sh …            # carries and runs all of it on a GPU host without network
 *
 * Scenarios, in one run:
 *   coresident   FLUX.2 4-bit (pre-quantized NF4), FLUX.1 and SD3 preloaded: all three resident on
 *                the device at once, as the admin API reports it; the fast path (FLEXY_FAST_PATH, SD3
 *                compiled) warmed up before the worker reported ready.
 *   promptpics   POST /generate on each engine at 1024x1024 (the catalog's steps), FLUX.2 with the remote
 *                text encoder answered by a loopback stand-in serving torch.save'd (1, 512, 15360) bf16
 *                embeddings; PNG size, per-phase timings, HTTP time against the worker's pipeline time;
 *                SD3 twice (its first job must not pay for compilation); then POST /nerd-sandbox.
 *   capped-32gb  a supervisor whose worker may take 32 GiB of the card (WORKER_DEVICE_MEMORY_GB): FLUX.2,
 *                SD3 and RealVisXL served in a mix by swapping from pinned host memory, no disk reload.
 *   kill-9       kill -9 of the worker mid-job: the job still succeeds, on the restarted worker.
 *
 * On two GPUs or more, then (or alone: `npm run test:gpu -- --only pool,cp`; in a reduced run CPU
 * workers stand in for the GPUs: cpu,cpu for the pool, cpu+cpu for the group):
 *   pool         one worker per GPU: a mixed stream over the four engines, one request at a time, routed
 *                engine-affinely (cross_gpu_reloads: an engine loaded from disk on one GPU while resident
 *                on the other, idle one); a sandbox run on both GPUs; kill -9 of one worker mid-job (the
 *                other keeps serving, the job is retried); images per hour on all GPUs beside one GPU's.
 *   cp           FLUX.2 at 1024x1024, 28 steps, fast path, on a device group of the first two GPUs
 *                (WORKER_DEVICES=0+1, context parallel) beside one GPU, same run; PSNR between the two
 *                images. Its row goes to bench/results/gpu.jsonl (reduced: test-artifacts/gpu-reduced.jsonl).
 *
 * Each scenario appends one row to bench/results/gpu-e2e.jsonl (reduced runs: to
 * test-artifacts/gpu-e2e-reduced.jsonl), and to $OUT/ when OUT is set. Exits 1 if a check failed.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { ENGINE_CATALOG, ENGINE_IDS, type EngineId } from '@flexy/engines';
import { api, freePort, ROOT, startStack, stopProcess, type ManagedProcess, type Stack } from '../support/stack';
import { BRIEF_NERD_SANDBOX as NERD_SANDBOX } from '../support/brief-requests';
import { readSse } from '../support/sse';

const GB = 1e9;
const PRELOAD: EngineId[] = ['flux2_dev_4bit', 'flux1_dev', 'sd3_medium'];
const CAPPED: EngineId[] = ['flux2_dev_4bit', 'sd3_medium', 'realvis_xl'];
const FAST_PATH_ENGINE: EngineId = 'sd3_medium';
const PROMPT = 'a lighthouse at dawn, oil painting, detailed';

interface Gpu {
  index: string;
  name: string;
  memoryGb: number;
}

interface Mode {
  gpu: boolean;
  size: number;
  steps: (engine: EngineId) => number;
  cappedSteps: number;
  sandbox: typeof NERD_SANDBOX;
  killSteps: number;
  killSize: number;
}

type Row = Record<string, unknown>;

// ---- the machine ---------------------------------------------------------------------------------

function gpus(): Gpu[] {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=index,name,memory.total', '--format=csv,noheader,nounits'], { encoding: 'utf8', timeout: 20_000 });
    const visible = process.env.CUDA_VISIBLE_DEVICES?.split(',').map((s) => s.trim());
    return out
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [index, name, mib] = line.split(',').map((s) => s.trim());
        return { index, name, memoryGb: round((Number(mib) * 1024 * 1024) / GB) };
      })
      .filter((g) => !visible || visible.includes(g.index));
  } catch {
    return [];
  }
}

/** The largest device memory any visible GPU had in use (nvidia-smi, so CUDA contexts included), sampled twice a second. */
class MemorySampler {
  private peakMib = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly enabled: boolean) {}

  start(): void {
    this.peakMib = 0;
    if (!this.enabled) return;
    const sample = () => {
      const child = spawn('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits'], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.on('exit', () => {
        for (const v of out.split('\n').map(Number).filter((n) => Number.isFinite(n) && n > 0)) this.peakMib = Math.max(this.peakMib, v);
      });
    };
    sample();
    this.timer = setInterval(sample, 500);
  }

  stop(): number | null {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    return this.enabled ? round((this.peakMib * 1024 * 1024) / GB) : null;
  }
}

function commit(): string {
  // A carried copy has no .git: the packing script wrote the commit it packed beside the code.
  const stamped = join(ROOT, '.gpu-tier-commit');
  if (existsSync(stamped)) return readFileSync(stamped, 'utf8').trim();
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim();
    return dirty ? `${sha}-dirty` : sha;
  } catch {
    return 'unknown';
  }
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- snapshots and the text-encoder stand-in -----------------------------------------------------

function marker(modelsDir: string, engine: EngineId): Record<string, any> | null {
  const file = join(modelsDir, ENGINE_CATALOG[engine].localDir, 'flexyface-demo.json');
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : null;
}

/** Writes the random snapshots that are missing (on a GPU host this is the long step: about 60 GB). */
function ensureSnapshots(modelsDir: string, reduced: boolean): void {
  const missing = ENGINE_IDS.filter((e) => marker(modelsDir, e)?.weights !== 'random' || Boolean(marker(modelsDir, e)?.tiny) !== reduced);
  if (missing.length === 0) return;
  const args = [join(ROOT, 'dist/libs/hub/src/cli.js'), 'random', ...missing, '--models-dir', modelsDir, '--force', ...(reduced ? ['--tiny', '--no-quantize'] : [])];
  console.log(`[gpu-tier] writing random snapshots: ${missing.join(', ')}`);
  const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`writing random snapshots failed (${r.status ?? r.signal})`);
}

/**
 * The remote FLUX.2 text encoder as the worker calls it (POST {"prompt": [...]}, bearer token), answered
 * from loopback with one torch.save'd bf16 tensor of (1, 512, joint_attention_dim) — (1, 512, 15360) for
 * the real transformer. Made once by the worker's own Python, so torch writes the exact format.
 */
async function startTextEncoderStandIn(modelsDir: string, dir: string): Promise<{ url: string; server: Server; calls: () => number; width: number }> {
  const config = JSON.parse(readFileSync(join(modelsDir, ENGINE_CATALOG.flux2_dev_4bit.localDir, 'transformer/config.json'), 'utf8'));
  const width = Number(config.joint_attention_dim);
  const file = join(dir, `embeds-${width}.pt`);
  const python = process.env.WORKER_PYTHON || join(ROOT, 'worker-python/.venv/bin/python');
  const made = spawnSync(python, ['-c', `import torch; torch.save(torch.randn(1, 512, ${width}, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16), ${JSON.stringify(file)})`], { stdio: 'inherit' });
  if (made.status !== 0) throw new Error(`could not write the stand-in embeddings with ${python}`);
  const body = readFileSync(file);
  let calls = 0;
  const server = createServer((req, res) => {
    let size = 0;
    req.on('data', (c: Buffer) => (size += c.length));
    req.on('end', () => {
      if (req.method !== 'POST' || !String(req.headers.authorization ?? '').startsWith('Bearer ') || size === 0) {
        res.writeHead(400).end('POST {"prompt": [...]} with a bearer token');
        return;
      }
      calls += 1;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length }).end(body);
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}/predict`, server, calls: () => calls, width };
}

// ---- talking to the stack ------------------------------------------------------------------------

function adminKey(stack: Stack): string {
  const out = execFileSync(process.execPath, [join(ROOT, 'dist/apps/gateway/src/auth/keys.cli.js'), 'create', '--name', 'gpu-tier', '--role', 'admin', '--rate', '100000', '--concurrency', '1000'], {
    env: stack.env,
    encoding: 'utf8',
  });
  return JSON.parse(out.trim().split('\n').pop()!).key;
}

interface WorkerView {
  id: string;
  state: string;
  pid: number | null;
  restarts: number;
  lastError: string | null;
  stale: boolean;
  currentJob: { id: string; step: number } | null;
  memory: { usedBytes: number; budgetBytes: number } | null;
  engines: Array<{ engine: string; weights: string; residentOn: 'device' | 'host' | null; bytes: number | null }>;
}

async function workers(stack: Stack, key: string): Promise<WorkerView[]> {
  const r = await api<WorkerView[] | { workers: WorkerView[] }>(stack, 'GET', '/admin/api/workers', undefined, { authorization: `Bearer ${key}` });
  if (r.status !== 200) throw new Error(`/admin/api/workers answered ${r.status}: ${r.text.slice(0, 200)}`);
  return (Array.isArray(r.json) ? r.json : r.json.workers).filter((w) => !w.stale);
}

/** Polls the admin API until `count` workers are ready and `accept` holds for them; returns them. */
async function waitForWorkers(stack: Stack, key: string, count: number, timeoutMs: number, accept: (ws: WorkerView[]) => boolean = () => true): Promise<WorkerView[]> {
  const deadline = Date.now() + timeoutMs;
  let last: WorkerView[] = [];
  while (Date.now() < deadline) {
    last = await workers(stack, key).catch(() => []);
    const ready = last.filter((w) => w.state === 'ready' || w.state === 'busy');
    if (ready.length >= count && accept(ready)) return ready;
    // A worker that cannot start (a missing package, a bad snapshot) restarts with backoff forever:
    // on a lent GPU, stop after a few tries rather than wait out the deadline.
    const failing = last.find((w) => w.state !== 'ready' && w.state !== 'busy' && w.restarts >= 3 && w.lastError);
    if (failing) throw new Error(`worker ${failing.id} keeps failing to start (${failing.restarts} restarts): ${failing.lastError}`);
    await sleep(500);
  }
  throw new Error(`workers not ready within ${timeoutMs} ms: ${JSON.stringify(last.map((w) => ({ id: w.id, state: w.state, engines: w.engines })))}`);
}

/** Disk loads the workers logged so far ("loaded <engine> (<kind> weights, …) in N ms"), per engine. */
function diskLoads(sup: ManagedProcess): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const line of sup.output) {
    const m = /\bloaded (\w+) \(\w+ weights/.exec(line);
    if (m) counts[m[1]] = (counts[m[1]] ?? 0) + 1;
  }
  return counts;
}

const total = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);

interface Generated {
  engine: string;
  ok: boolean;
  status: number;
  httpS: number;
  pipelineS: number | null;
  timings: Record<string, number> | null;
  width: number | null;
  height: number | null;
  weights: string | null;
  error?: string;
}

async function pngSize(base64: string | undefined): Promise<{ width: number | null; height: number | null }> {
  if (!base64) return { width: null, height: null };
  const meta = await sharp(Buffer.from(base64, 'base64')).metadata();
  return meta.format === 'png' ? { width: meta.width ?? null, height: meta.height ?? null } : { width: null, height: null };
}

function pipelineSeconds(t: Record<string, number> | null): number | null {
  if (!t) return null;
  return (t.text_encode_ms + t.denoise_ms + t.decode_ms) / 1000;
}

async function generate(stack: Stack, engine: EngineId, size: number, steps: number, seed = 42): Promise<Generated> {
  const body = { prompt: PROMPT, engine, seed, steps, guidance: ENGINE_CATALOG[engine].defaults.guidance, width: size, height: size };
  const started = performance.now();
  const r = await api(stack, 'POST', '/generate', body);
  const httpS = (performance.now() - started) / 1000;
  const timings = r.json?.timings ?? null;
  const dims = await pngSize(r.json?.image);
  const ok = r.status === 200 && r.json?.status === 'succeeded' && dims.width === size && dims.height === size && typeof timings?.denoise_ms === 'number';
  return {
    engine,
    ok,
    status: r.status,
    httpS: round(httpS, 3),
    pipelineS: pipelineSeconds(timings) === null ? null : round(pipelineSeconds(timings)!, 3),
    timings,
    ...dims,
    weights: r.json?.weights ?? null,
    ...(ok ? {} : { error: r.text.slice(0, 300) }),
  };
}

// ---- scenarios -----------------------------------------------------------------------------------

class Run {
  readonly rows: Row[] = [];
  readonly failures: string[] = [];

  constructor(
    private readonly common: Row,
    private readonly resultsFile: string,
  ) {}

  check(scenario: string, name: string, ok: boolean, detail?: unknown): boolean {
    console.log(`[gpu-tier] ${ok ? 'ok  ' : 'FAIL'} ${scenario}: ${name}${!ok && detail !== undefined ? ` ${JSON.stringify(detail)}` : ''}`);
    if (!ok) this.failures.push(`${scenario}: ${name}`);
    return ok;
  }

  record(scenario: string, fields: Row, checks: Record<string, boolean>): void {
    const row = { date: new Date().toISOString(), ...this.common, scenario, ...fields, checks, passed: Object.values(checks).every(Boolean) };
    const line = JSON.stringify(row);
    for (const file of [this.resultsFile, process.env.OUT ? join(process.env.OUT, 'gpu-e2e.jsonl') : null]) {
      if (!file) continue;
      mkdirSync(join(file, '..'), { recursive: true });
      appendFileSync(file, line + '\n');
    }
    this.rows.push(row);
    console.log(`[gpu-tier] ROW ${line.length > 1500 ? line.slice(0, 1500) + '…' : line}`);
  }
}

async function scenarioCoresident(run: Run, stack: Stack, key: string, gpuCount: number, readyS: number, sampler: MemorySampler, sup: ManagedProcess): Promise<void> {
  const ready = await waitForWorkers(stack, key, gpuCount, 60_000);
  const resident = ready.map((w) => ({
    worker: w.id,
    on_device: w.engines.filter((e) => e.residentOn === 'device').map((e) => e.engine),
    engine_gb: Object.fromEntries(w.engines.filter((e) => e.bytes).map((e) => [e.engine, round(e.bytes! / GB)])),
    used_gb: w.memory ? round(w.memory.usedBytes / GB) : null,
    budget_gb: w.memory ? round(w.memory.budgetBytes / GB) : null,
  }));
  const allThree = resident.every((r) => PRELOAD.every((e) => r.on_device.includes(e)));
  const warmLine = sup.output.findIndex((l) => new RegExp(`warm-up of ${FAST_PATH_ENGINE} took`).test(l));
  const readyLine = sup.output.findIndex((l) => /ready on /.test(l));
  const checks: Record<string, boolean> = {
    three_engines_resident_at_once: run.check('coresident', `${PRELOAD.join(', ')} resident on every worker's device`, allThree, resident),
  };
  if (process.env.FLEXY_FAST_PATH) {
    checks.fast_path_warmed_before_ready = run.check('coresident', 'the fast path warmed up before the worker reported ready', warmLine >= 0 && warmLine < readyLine, { warmLine, readyLine });
  }
  run.record('coresident', { workers: resident, worker_ready_s: round(readyS, 1), fast_path: process.env.FLEXY_FAST_PATH || null, disk_loads: diskLoads(sup), peak_gb: sampler.stop() }, checks);
}

async function scenarioPromptPics(run: Run, stack: Stack, mode: Mode, sup: ManagedProcess, sampler: MemorySampler, flux2Snapshot: string, standInCalls: () => number): Promise<void> {
  sampler.start();
  const loadsBefore = diskLoads(sup);
  const results: Generated[] = [];
  // RealVisXL is not preloaded: one small job loads it, so the measured one is about serving, not loading.
  const warm = await generate(stack, 'realvis_xl', mode.size, 1);
  run.check('promptpics', 'realvis_xl loads on first use', warm.ok, warm);
  const firstOfFast = await generate(stack, FAST_PATH_ENGINE, mode.size, mode.steps(FAST_PATH_ENGINE));
  for (const engine of ENGINE_IDS) results.push(await generate(stack, engine, mode.size, mode.steps(engine)));
  const sandboxStarted = performance.now();
  const sandbox = await api(stack, 'POST', '/nerd-sandbox', mode.sandbox);
  const sandboxS = (performance.now() - sandboxStarted) / 1000;
  const sandboxResults: Array<Record<string, any>> = sandbox.json?.results ?? [];
  const sandboxSizes = await Promise.all(sandboxResults.map((r) => pngSize(r.image)));
  const peak = sampler.stop();
  const loads = diskLoads(sup);
  const reloads = Object.entries(loads).reduce((n, [e, c]) => n + Math.max(0, c - Math.max(1, loadsBefore[e] ?? 0)), 0);

  const perEngine = Object.fromEntries(
    results.map((r) => [
      r.engine,
      {
        s_per_image_http: r.httpS,
        s_per_image_pipeline: r.pipelineS,
        overhead_ratio: r.pipelineS ? round(r.httpS / r.pipelineS, 4) : null,
        steps: mode.steps(r.engine as EngineId),
        width: r.width,
        height: r.height,
        timings_ms: r.timings,
        weights: r.weights,
        ...(r.error ? { error: r.error } : {}),
      },
    ]),
  );
  const ratios = results.map((r) => (r.pipelineS ? r.httpS / r.pipelineS : Infinity));
  const fast = results.find((r) => r.engine === FAST_PATH_ENGINE)!;
  const checks: Record<string, boolean> = {
    every_engine_succeeded: run.check('promptpics', `/generate on ${ENGINE_IDS.join(', ')} at ${mode.size}x${mode.size}: 200, PNG of that size, timings`, results.every((r) => r.ok), results.filter((r) => !r.ok)),
    weights_random: run.check('promptpics', 'every answer says weights "random"', results.every((r) => r.weights === 'random')),
    remote_text_encoder_used: run.check('promptpics', 'FLUX.2 prompts went to the text-encoder stand-in', standInCalls() > 0),
    nerd_sandbox: run.check(
      'promptpics',
      '/nerd-sandbox: every engine succeeded with an image of the asked size',
      sandbox.status === 200 && sandboxResults.length === ENGINE_IDS.length && sandboxResults.every((r, i) => r.status === 'succeeded' && sandboxSizes[i].width === mode.sandbox.width),
      sandboxResults.map((r) => ({ engine: r.engine, status: r.status, error: r.error })),
    ),
    no_disk_reload: run.check('promptpics', 'no engine loaded from disk twice', reloads === 0, loads),
  };
  if (mode.gpu) {
    checks.overhead_at_most_1_02 = run.check('promptpics', 'HTTP time / pipeline time <= 1.02 at 1024x1024', ratios.every((x) => x <= 1.02), perEngine);
    if (process.env.FLEXY_FAST_PATH) {
      // Compilation in the first job would add seconds; warmed up during load, the first job runs like the next.
      const first = firstOfFast.timings?.denoise_ms ?? Infinity;
      const next = fast.timings?.denoise_ms ?? 0;
      checks.fast_path_first_job_not_compiling = run.check('promptpics', `first ${FAST_PATH_ENGINE} job denoises within 1.25x of the next (no compile in a job)`, first <= next * 1.25 + 200, { first, next });
    }
  }
  run.record(
    'promptpics',
    {
      engines_succeeded: results.filter((r) => r.ok).map((r) => r.engine),
      flux2_snapshot: flux2Snapshot,
      text_encoder: 'remote (loopback stand-in, torch.save bf16 embeddings)',
      width: mode.size,
      height: mode.size,
      per_engine: perEngine,
      overhead_ratio: Object.fromEntries(Object.entries(perEngine).map(([e, v]) => [e, v.overhead_ratio])),
      overhead_ratio_max: round(Math.max(...ratios), 4),
      pipeline_time: 'the worker\'s text_encode + denoise + decode (FLUX.2: the remote embeddings\' fetch included)',
      fast_path_first_job_denoise_ms: firstOfFast.timings?.denoise_ms ?? null,
      nerd_sandbox: {
        http_s: round(sandboxS, 3),
        request: mode.sandbox,
        results: sandboxResults.map((r, i) => ({ engine: r.engine, status: r.status, latency_ms: r.latency_ms, width: sandboxSizes[i].width, timings: r.timings })),
      },
      peak_gb: peak,
      disk_reloads: reloads,
      disk_loads: loads,
      jobs_lost: results.filter((r) => !r.ok).length + sandboxResults.filter((r) => r.status !== 'succeeded').length,
    },
    checks,
  );
}

async function scenarioCapped(run: Run, stack: Stack, mode: Mode, key: string, sup: ManagedProcess, sampler: MemorySampler, capGb: number | null, budgetGb: number): Promise<void> {
  sampler.start();
  const warm: Generated[] = [];
  for (const engine of CAPPED) warm.push(await generate(stack, engine, mode.size, mode.cappedSteps));
  const loadsAfterWarmUp = diskLoads(sup);
  const sequence: EngineId[] = ['sd3_medium', 'flux2_dev_4bit', 'realvis_xl', 'flux2_dev_4bit', 'sd3_medium', 'realvis_xl', 'flux2_dev_4bit', 'sd3_medium'];
  const served: Generated[] = [];
  for (const engine of sequence) served.push(await generate(stack, engine, mode.size, mode.cappedSteps, 7));
  const peak = sampler.stop();
  const loads = diskLoads(sup);
  const reloads = total(loads) - total(loadsAfterWarmUp);
  const [w] = await workers(stack, key);
  const checks: Record<string, boolean> = {
    all_succeeded: run.check('capped-32gb', `${sequence.length} mixed jobs after warm-up succeeded`, [...warm, ...served].every((r) => r.ok), [...warm, ...served].filter((r) => !r.ok)),
    no_disk_reload: run.check('capped-32gb', 'no disk reload after warm-up (swaps from pinned host memory)', reloads === 0, { loadsAfterWarmUp, loads }),
    swapped: run.check('capped-32gb', 'engines were swapped in (load_ms > 0 on some jobs)', served.some((r) => (r.timings?.load_ms ?? 0) > 0)),
  };
  if (capGb !== null && peak !== null) {
    // nvidia-smi counts the CUDA context (about 0.5–1 GB) beside the allocator's capped memory.
    checks.under_cap = run.check('capped-32gb', `device memory stayed under the ${capGb} GiB cap`, peak <= (capGb * 1024 ** 3) / GB + 1.5, { peak });
  }
  run.record(
    'capped-32gb',
    {
      cap_gib: capGb,
      residency_budget_gib: budgetGb,
      engines: CAPPED,
      requests: sequence.length,
      steps: mode.cappedSteps,
      width: mode.size,
      height: mode.size,
      served: served.map((r) => ({ engine: r.engine, ok: r.ok, http_s: r.httpS, load_ms: r.timings?.load_ms ?? null, pipeline_s: r.pipelineS })),
      swap_in_ms: served.filter((r) => (r.timings?.load_ms ?? 0) > 0).map((r) => ({ engine: r.engine, load_ms: r.timings!.load_ms })),
      resident_after: w?.engines.map((e) => ({ engine: e.engine, on: e.residentOn, gb: e.bytes ? round(e.bytes / GB) : null })),
      peak_gb: peak,
      disk_reloads: reloads,
      disk_loads: loads,
      jobs_lost: served.filter((r) => !r.ok).length,
    },
    checks,
  );
}

async function scenarioKill(run: Run, stack: Stack, mode: Mode, key: string, sup: ManagedProcess, sampler: MemorySampler): Promise<void> {
  sampler.start();
  const engine: EngineId = 'flux2_dev_4bit';
  const body = { prompt: `${PROMPT} (kill -9 mid-job)`, engine, seed: 9, steps: mode.killSteps, guidance: 4, width: mode.killSize, height: mode.killSize };
  const created = await api(stack, 'POST', '/v1/generations', body);
  if (created.status !== 202) throw new Error(`POST /v1/generations answered ${created.status}: ${created.text.slice(0, 300)}`);
  const id: string = created.json.id;
  // Mid-job: the second step's progress event has arrived over SSE.
  const events = await readSse(`${stack.url}/v1/generations/${id}/events`, { until: (m) => m.event === 'progress' && (m.data?.step ?? 0) >= 2, timeoutMs: 600_000 });
  const progressed = events.messages.some((m) => m.event === 'progress');
  // The worker running it: the one whose current job it is, once the supervisor has published it.
  let victim: WorkerView | undefined;
  const deadline = Date.now() + 10_000;
  while (!victim && Date.now() < deadline) {
    const ws = await workers(stack, key);
    // One worker: it is the one running the job (its published state may lag by up to 2 s).
    victim = ws.find((w) => w.currentJob?.id === id) ?? (ws.length === 1 ? ws[0] : undefined);
    if (!victim) await sleep(100);
  }
  const step = events.messages.filter((m) => m.event === 'progress').pop()?.data?.step ?? null;
  if (!victim?.pid) throw new Error(`no busy worker found for ${id}`);
  const killedAt = Date.now();
  process.kill(victim.pid, 'SIGKILL');
  console.log(`[gpu-tier] kill -9 ${victim.pid} (${victim.id}) at step ${step}`);
  const finalDeadline = Date.now() + 900_000;
  let final: Record<string, any> = {};
  while (Date.now() < finalDeadline) {
    const r = await api(stack, 'GET', `/v1/generations/${id}`);
    final = r.json ?? {};
    if (!['queued', 'running'].includes(final.status)) break;
    await sleep(500);
  }
  const after = await workers(stack, key);
  const restarted = after.find((w) => w.id === victim!.id);
  const checks = {
    killed_mid_job: run.check('kill-9', 'the worker was killed mid-job (after its second step)', progressed && (step ?? 0) >= 2 && (step ?? 0) < mode.killSteps),
    job_succeeded: run.check('kill-9', 'the job still succeeded', final.status === 'succeeded', final.error ?? final.status),
    worker_restarted: run.check('kill-9', 'the supervisor restarted the worker (new pid)', Boolean(restarted && restarted.pid !== victim.pid && restarted.restarts > victim.restarts), restarted),
  };
  run.record(
    'kill-9',
    {
      engine,
      steps: mode.killSteps,
      width: mode.killSize,
      killed_at_step: step,
      killed_pid: victim.pid,
      recovered_s: round((Date.now() - killedAt) / 1000, 1),
      final_status: final.status ?? null,
      timings_ms: final.timings ?? null,
      peak_gb: sampler.stop(),
      jobs_lost: final.status === 'succeeded' ? 0 : 1,
    },
    checks,
  );
}

// ---- two GPUs or more: the pool, and one image across a device group ------------------------------

/**
 * WORKER_DEVICES of the multi-GPU scenarios: every GPU a worker of its own, one GPU alone, the first
 * two GPUs as one device group. A reduced run stands the CPU forms in for them (cpu,cpu / cpu / cpu+cpu).
 */
interface PoolDevices {
  all: string;
  one: string;
  group: string;
  count: number;
}

function poolDevices(found: Gpu[], gpuMode: boolean): PoolDevices {
  if (!gpuMode) return { all: 'cpu,cpu', one: 'cpu', group: 'cpu+cpu', count: 2 };
  return { all: found.map((g) => g.index).join(','), one: found[0].index, group: found.slice(0, 2).map((g) => g.index).join('+'), count: found.length };
}

/** Engines in a mixed order, each coming back after others ran: the routing stream. */
const ROUTING_STREAM: EngineId[] = [
  'flux1_dev', 'sd3_medium', 'flux1_dev', 'realvis_xl', 'sd3_medium', 'flux2_dev_4bit',
  'flux1_dev', 'flux2_dev_4bit', 'realvis_xl', 'sd3_medium', 'flux2_dev_4bit', 'realvis_xl',
];

interface JobDetailView {
  id: string;
  status: string;
  workerId: string | null;
  attempts: number;
  error: { code: string; message: string | null } | null;
}

async function jobDetail(stack: Stack, key: string, id: string): Promise<JobDetailView> {
  const r = await api<JobDetailView>(stack, 'GET', `/admin/api/jobs/${id}`, undefined, { authorization: `Bearer ${key}` });
  if (r.status !== 200) throw new Error(`/admin/api/jobs/${id} answered ${r.status}: ${r.text.slice(0, 200)}`);
  return r.json;
}

async function createJob(stack: Stack, engine: EngineId, size: number, steps: number, seed: number, prompt = PROMPT): Promise<string> {
  const body = { prompt, engine, seed, steps, guidance: ENGINE_CATALOG[engine].defaults.guidance, width: size, height: size };
  const r = await api(stack, 'POST', '/v1/generations', body);
  if (r.status !== 202) throw new Error(`POST /v1/generations answered ${r.status}: ${r.text.slice(0, 300)}`);
  return r.json.id;
}

async function finalOf(stack: Stack, id: string, timeoutMs = 900_000): Promise<Record<string, any>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await api(stack, 'GET', `/v1/generations/${id}`);
    if (r.status === 200 && !['queued', 'running'].includes(r.json.status)) return r.json;
    if (Date.now() > deadline) throw new Error(`generation ${id} not finished within ${timeoutMs} ms`);
    await sleep(250);
  }
}

/** Disk loads per worker ("loaded <engine> (<kind> weights" in rank 0's log; a group's other ranks are not counted). */
function diskLoadsByWorker(sup: ManagedProcess): Record<string, Record<string, number>> {
  const counts: Record<string, Record<string, number>> = {};
  for (const line of sup.output) {
    const m = /\[worker ([^\]]+)\].*\bloaded (\w+) \(\w+ weights/.exec(line);
    if (!m || /\brank \d+\]/.test(line)) continue;
    (counts[m[1]] ??= {})[m[2]] = (counts[m[1]][m[2]] ?? 0) + 1;
  }
  return counts;
}

/** Starts a supervisor for a phase and waits for its workers (fresh processes, not the last phase's). */
async function startPhase(stack: Stack, key: string, count: number, env: NodeJS.ProcessEnv): Promise<ManagedProcess> {
  const before = await workers(stack, key).catch(() => []);
  const sup = await stack.startSupervisor({ FLEXY_FAST_PATH: '', WORKER_VRAM_BUDGET_GB: '', WORKER_DEVICE_MEMORY_GB: '', ...env });
  await waitForWorkers(stack, key, count, 900_000, (ws) => ws.every((w) => !before.some((b) => b.pid === w.pid)));
  return sup;
}

/** Every engine `perEngine` times, all submitted at once; images per hour from the first submit to the last finish. */
async function throughput(stack: Stack, mode: Mode, perEngine: number): Promise<{ jobs: number; succeeded: number; wall_s: number; images_per_hour: number }> {
  const started = performance.now();
  const ids: string[] = [];
  for (let i = 0; i < perEngine; i++) for (const engine of ENGINE_IDS) ids.push(await createJob(stack, engine, mode.size, mode.cappedSteps, 100 + i));
  const finals = await Promise.all(ids.map((id) => finalOf(stack, id)));
  const wallS = (performance.now() - started) / 1000;
  const succeeded = finals.filter((f) => f.status === 'succeeded').length;
  return { jobs: ids.length, succeeded, wall_s: round(wallS, 2), images_per_hour: round((succeeded * 3600) / wallS, 1) };
}

/**
 * The worker pool (one worker per GPU): a mixed stream over the four engines is routed engine-affinely
 * (no engine is loaded from disk on one GPU while it is resident on the other, idle one); a sandbox
 * run uses both GPUs; a kill -9 of one worker mid-job leaves the other serving and the killed job is
 * retried and succeeds; images per hour on all GPUs beside one GPU's, in the same run.
 */
async function scenarioPool(run: Run, stack: Stack, mode: Mode, key: string, devices: PoolDevices, sampler: MemorySampler): Promise<void> {
  sampler.start();
  // 1. Routing: fresh workers, nothing preloaded, one request at a time (so the other GPU is always free).
  const supRouting = await startPhase(stack, key, devices.count, { WORKER_DEVICES: devices.all, WORKER_PRELOAD: '' });
  let crossGpuReloads = 0;
  const routed: Array<Record<string, unknown>> = [];
  for (const [i, engine] of ROUTING_STREAM.entries()) {
    // What each worker holds: what it loaded in this phase (every engine fits on one card here, so
    // nothing loaded is dropped; the published residency lags by up to a heartbeat).
    const loadsBefore = diskLoadsByWorker(supRouting);
    const id = await createJob(stack, engine, mode.size, mode.cappedSteps, 300 + i);
    const final = await finalOf(stack, id);
    const ranOn = (await jobDetail(stack, key, id)).workerId;
    const loadsAfter = diskLoadsByWorker(supRouting);
    const loadedHere = ranOn !== null && (loadsAfter[ranOn]?.[engine] ?? 0) > (loadsBefore[ranOn]?.[engine] ?? 0);
    const residentElsewhere = Object.entries(loadsBefore).filter(([w, held]) => w !== ranOn && (held[engine] ?? 0) > 0).map(([w]) => w);
    if (loadedHere && residentElsewhere.length) crossGpuReloads += 1;
    routed.push({ engine, status: final.status, worker: ranOn, loaded_from_disk: loadedHere, resident_elsewhere: residentElsewhere });
  }
  const routingLoads = diskLoadsByWorker(supRouting);
  await stopProcess(supRouting);

  // 2. All GPUs, every engine preloaded on every worker: throughput, a sandbox run, kill -9 of one worker.
  const supPool = await startPhase(stack, key, devices.count, { WORKER_DEVICES: devices.all, WORKER_PRELOAD: ENGINE_IDS.join(',') });
  const poolRate = await throughput(stack, mode, mode.gpu ? 4 : 2);
  const sandbox = await api(stack, 'POST', '/v1/sandbox-runs', { prompt: PROMPT, seed: 11, steps: mode.cappedSteps, width: mode.size, height: mode.size });
  let sandboxRun: Record<string, any> = sandbox.json ?? {};
  const sandboxDeadline = Date.now() + 900_000;
  while (sandbox.status === 202 && sandboxRun.status !== 'completed' && Date.now() < sandboxDeadline) {
    await sleep(500);
    sandboxRun = (await api(stack, 'GET', `/v1/sandbox-runs/${sandbox.json.id}`)).json;
  }
  const sandboxResults: Array<Record<string, any>> = sandboxRun.results ?? [];
  const sandboxWorkers = [...new Set(await Promise.all(sandboxResults.filter((r) => r.generation_id).map(async (r) => (await jobDetail(stack, key, r.generation_id)).workerId)))];

  const kill = await killOneOfThePool(stack, mode, key);
  await stopProcess(supPool);

  // 3. One GPU, the same engines preloaded, the same stream.
  const supOne = await startPhase(stack, key, 1, { WORKER_DEVICES: devices.one, WORKER_PRELOAD: ENGINE_IDS.join(',') });
  const oneRate = await throughput(stack, mode, mode.gpu ? 4 : 2);
  await stopProcess(supOne);

  const routingLost = routed.filter((r) => r.status !== 'succeeded').length;
  const jobsLost = routingLost + (poolRate.jobs - poolRate.succeeded) + (oneRate.jobs - oneRate.succeeded) + kill.lost;
  const checks: Record<string, boolean> = {
    routing_engine_affine: run.check('pool', `${ROUTING_STREAM.length} mixed jobs, one at a time: no engine loaded on a worker while resident on the other, idle one`, crossGpuReloads === 0, routed),
    routing_succeeded: run.check('pool', 'every routed job succeeded', routingLost === 0),
    sandbox_uses_every_gpu: run.check('pool', `a sandbox run of ${ENGINE_IDS.length} engines ran on ${devices.count} workers`, sandboxRun.status === 'completed' && sandboxWorkers.length === Math.min(devices.count, ENGINE_IDS.length), { status: sandboxRun.status, sandboxWorkers }),
    kill_other_kept_serving: run.check('pool', 'after kill -9 of one worker, a job submitted then ran on the other while it restarted', kill.otherServed, kill),
    kill_job_retried: run.check('pool', 'the killed job was retried and succeeded', kill.killedJobSucceeded, kill),
    throughput_all_succeeded: run.check('pool', 'every throughput job succeeded, on all GPUs and on one', poolRate.succeeded === poolRate.jobs && oneRate.succeeded === oneRate.jobs, { poolRate, oneRate }),
  };
  run.record(
    'pool',
    {
      gpus: devices.count,
      worker_devices: devices.all,
      jobs: ROUTING_STREAM.length + poolRate.jobs + oneRate.jobs + sandboxResults.length + kill.jobs,
      cross_gpu_reloads: crossGpuReloads,
      jobs_lost: jobsLost,
      images_per_hour: poolRate.images_per_hour,
      images_per_hour_one_gpu: oneRate.images_per_hour,
      speedup: oneRate.images_per_hour ? round(poolRate.images_per_hour / oneRate.images_per_hour, 3) : null,
      throughput: { all_gpus: poolRate, one_gpu: oneRate, per_engine_jobs: mode.gpu ? 4 : 2, steps: mode.cappedSteps, width: mode.size, height: mode.size, preload: ENGINE_IDS },
      routing: { jobs: routed, disk_loads_by_worker: routingLoads },
      sandbox: { status: sandboxRun.status ?? null, workers: sandboxWorkers, results: sandboxResults.map((r) => ({ engine: r.engine, status: r.status })) },
      kill_9: kill,
      peak_gb: sampler.stop(),
    },
    checks,
  );
}

/** Two long jobs, one per worker; kill -9 the worker of the first mid-job; a third job submitted right after must run on the other worker. */
async function killOneOfThePool(stack: Stack, mode: Mode, key: string): Promise<{ jobs: number; lost: number; killedWorker: string | null; killedAtStep: number | null; otherServed: boolean; killedJobSucceeded: boolean; attempts: number | null; thirdRanOn: string | null }> {
  const engine: EngineId = 'flux1_dev';
  const first = await createJob(stack, engine, mode.killSize, mode.killSteps, 21, `${PROMPT} (pool kill -9)`);
  const second = await createJob(stack, engine, mode.killSize, mode.killSteps, 22, `${PROMPT} (pool, the other worker)`);
  let victim: WorkerView | undefined;
  const deadline = Date.now() + 600_000;
  while (!victim && Date.now() < deadline) {
    victim = (await workers(stack, key)).find((w) => w.currentJob?.id === first && w.currentJob.step >= 2);
    if (!victim) await sleep(200);
  }
  if (!victim?.pid) throw new Error(`the first pool job ${first} never showed two steps on a worker`);
  process.kill(victim.pid, 'SIGKILL');
  console.log(`[gpu-tier] pool: kill -9 ${victim.pid} (${victim.id}) at step ${victim.currentJob?.step}`);
  const third = await createJob(stack, 'sd3_medium', mode.size, 2, 23, `${PROMPT} (pool, while one worker restarts)`);
  const thirdFinal = await finalOf(stack, third);
  const thirdRanOn = (await jobDetail(stack, key, third)).workerId;
  const restartedAlready = (await workers(stack, key)).find((w) => w.id === victim!.id && w.pid !== victim!.pid && (w.state === 'ready' || w.state === 'busy'));
  const [firstFinal, secondFinal] = await Promise.all([finalOf(stack, first), finalOf(stack, second)]);
  const attempts = (await jobDetail(stack, key, first)).attempts;
  const finals = [firstFinal, secondFinal, thirdFinal];
  return {
    jobs: 3,
    lost: finals.filter((f) => f.status !== 'succeeded').length,
    killedWorker: victim.id,
    killedAtStep: victim.currentJob?.step ?? null,
    // Served by the survivor: it ran elsewhere than the killed worker (which may have been back by then).
    otherServed: thirdFinal.status === 'succeeded' && thirdRanOn !== null && thirdRanOn !== victim.id,
    killedJobSucceeded: firstFinal.status === 'succeeded' && attempts >= 2,
    attempts,
    thirdRanOn: thirdRanOn ?? (restartedAlready ? 'restarted' : null),
  };
}

/** Raw RGB of a base64 PNG, for comparing two images. */
async function rgb(base64: string): Promise<Buffer> {
  return sharp(Buffer.from(base64, 'base64')).removeAlpha().raw().toBuffer();
}

function psnr(a: Buffer, b: Buffer): number | null {
  if (a.length !== b.length || a.length === 0) return null;
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i] - b[i]) ** 2;
  const mse = sum / a.length;
  return mse === 0 ? Infinity : round(10 * Math.log10((255 * 255) / mse), 2);
}

function pythonVersions(): Record<string, string | null> {
  const python = process.env.WORKER_PYTHON || join(ROOT, 'worker-python/.venv/bin/python');
  const r = spawnSync(python, ['-c', 'import json, torch, diffusers; print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__}))'], { encoding: 'utf8' });
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop()!);
  } catch {
    return { torch: null, cuda: null, diffusers: null };
  }
}

function driver(): string | null {
  try {
    return execFileSync('nvidia-smi', ['--query-gpu=driver_version', '--format=csv,noheader'], { encoding: 'utf8', timeout: 20_000 }).trim().split('\n')[0] || null;
  } catch {
    return null;
  }
}

/**
 * One FLUX.2 image across a device group (WORKER_DEVICES=0+1: diffusers' context parallelism, Ulysses
 * over the two ranks) beside the same worker on one GPU, in the same run: 1024x1024, 28 steps, the fast
 * path on both, over HTTP. One row in bench/results/gpu.jsonl (the bench's row shape), PSNR against the
 * one-GPU image.
 */
async function scenarioContextParallel(run: Run, stack: Stack, mode: Mode, key: string, devices: PoolDevices, sampler: MemorySampler, cpResults: string, common: Row): Promise<void> {
  const engine: EngineId = 'flux2_dev_4bit';
  const size = mode.gpu ? 1024 : 64;
  const steps = mode.gpu ? 28 : 2;
  const reps = mode.gpu ? 3 : 2;
  const fastPath = mode.gpu ? `${engine}:fast` : '';
  const measured: Record<string, { httpS: number[]; pipelineS: number[]; denoiseS: number[]; image: string | null; peakGb: number | null; error?: string }> = {};
  for (const [label, worker] of [['group', devices.group], ['one', devices.one]] as const) {
    sampler.start();
    const sup = await startPhase(stack, key, 1, { WORKER_DEVICES: worker, WORKER_PRELOAD: engine, FLEXY_FAST_PATH: fastPath });
    const m: (typeof measured)[string] = { httpS: [], pipelineS: [], denoiseS: [], image: null, peakGb: null };
    // The first job is not timed: what a fast path leaves to the first job at this size is paid there.
    for (let i = 0; i <= reps; i++) {
      const body = { prompt: PROMPT, engine, seed: 42, steps, guidance: 4, width: size, height: size };
      const started = performance.now();
      const r = await api(stack, 'POST', '/generate', body);
      const httpS = (performance.now() - started) / 1000;
      if (r.status !== 200 || r.json?.status !== 'succeeded') {
        m.error = `${r.status}: ${r.text.slice(0, 300)}`;
        break;
      }
      if (i === 0) continue;
      m.httpS.push(httpS);
      m.pipelineS.push(pipelineSeconds(r.json.timings)!);
      m.denoiseS.push(r.json.timings.denoise_ms / 1000);
      m.image = r.json.image;
    }
    m.peakGb = sampler.stop();
    measured[label] = m;
    await stopProcess(sup);
  }
  const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : null);
  const group = measured.group;
  const one = measured.one;
  const quality = group.image && one.image ? psnr(await rgb(group.image), await rgb(one.image)) : null;
  const groupS = median(group.pipelineS);
  const oneS = median(one.pipelineS);
  const ranks = devices.group.split('+').length;
  const identity = commit();
  const versions = pythonVersions();
  const row = {
    date: new Date().toISOString(),
    card: common.card,
    driver: mode.gpu ? driver() : null,
    ...versions,
    commit: identity.replace(/-dirty$/, ''),
    commit_state: existsSync(join(ROOT, '.gpu-tier-commit')) ? 'archive' : identity.endsWith('-dirty') ? 'dirty' : identity === 'unknown' ? 'unknown (no git)' : 'clean',
    command: common.command,
    weights: common.weights,
    engine,
    mode: `worker over HTTP, device group of ${ranks} (WORKER_DEVICES=${devices.group}): context parallel, Ulysses${mode.gpu ? '-anything' : ''}; fast path ${fastPath || 'off'}`,
    gpus: mode.gpu ? ranks : 0,
    ranks,
    width: size,
    height: size,
    steps,
    reps,
    s_per_image: groupS === null ? null : round(groupS, 3),
    s_per_step: median(group.denoiseS) === null ? null : round(median(group.denoiseS)! / steps, 4),
    s_per_image_http: median(group.httpS) === null ? null : round(median(group.httpS)!, 3),
    peak_gb: group.peakGb,
    one_gpu: {
      worker_devices: devices.one,
      s_per_image: oneS === null ? null : round(oneS, 3),
      s_per_step: median(one.denoiseS) === null ? null : round(median(one.denoiseS)! / steps, 4),
      s_per_image_http: median(one.httpS) === null ? null : round(median(one.httpS)!, 3),
      peak_gb: one.peakGb,
      fast_path: fastPath || 'off',
      ...(one.error ? { error: one.error } : {}),
    },
    speedup_vs_one_gpu: groupS && oneS ? round(oneS / groupS, 3) : null,
    psnr_db_vs_one_gpu: quality === Infinity ? 'identical' : quality,
    s_per_image_is: "the worker's text_encode + denoise + decode (median of the timed jobs; the first job untimed)",
    target_s_per_image: mode.gpu ? 4.5 : null,
    ...(group.error ? { error: group.error } : {}),
  };
  const line = JSON.stringify(row);
  for (const file of [cpResults, process.env.OUT ? join(process.env.OUT, mode.gpu ? 'gpu.jsonl' : 'gpu-reduced.jsonl') : null]) {
    if (!file) continue;
    mkdirSync(join(file, '..'), { recursive: true });
    appendFileSync(file, line + '\n');
  }
  console.log(`[gpu-tier] CP ROW ${line}`);
  run.check('context-parallel', `FLUX.2 ${size}x${size}, ${steps} steps on the group and on one GPU succeeded`, !group.error && !one.error, { group: group.error, one: one.error });
  run.check('context-parallel', 'the group image is the one-GPU image (PSNR >= 30 dB)', quality !== null && quality >= 30, { psnr: quality });
  if (mode.gpu) run.check('context-parallel', 's_per_image <= 4.5 on the group', groupS !== null && groupS <= 4.5, { s_per_image: groupS, one_gpu: oneS });
}

// ---- main ----------------------------------------------------------------------------------------

async function main(argv: string[]): Promise<number> {
  const reducedAsked = argv.includes('--reduced');
  const found = gpus();
  const gpuMode = found.length > 0 && !reducedAsked;
  const gpuCount = gpuMode ? found.length : 1;
  const modelsDir = process.env.MODELS_DIR || join(ROOT, gpuMode ? '.data/random-models' : '.data/random-models-tiny');
  const mode: Mode = gpuMode
    ? { gpu: true, size: 1024, steps: (e) => ENGINE_CATALOG[e].defaults.steps, cappedSteps: 8, sandbox: NERD_SANDBOX, killSteps: 28, killSize: 1024 }
    : { gpu: false, size: 64, steps: () => 2, cappedSteps: 2, sandbox: { ...NERD_SANDBOX, steps: 2, width: 64, height: 64 }, killSteps: 100, killSize: 512 };
  const resultsFile = gpuMode ? join(ROOT, 'bench/results/gpu-e2e.jsonl') : join(ROOT, 'test-artifacts/gpu-e2e-reduced.jsonl');
  const cpResults = gpuMode ? join(ROOT, 'bench/results/gpu.jsonl') : join(ROOT, 'test-artifacts/gpu-reduced.jsonl');
  // Phases: base (one worker per GPU: coresident, promptpics, capped-32gb, kill-9), then on two GPUs or
  // more pool and cp; `--only pool,cp` picks (a reduced run stands CPU workers in for two GPUs).
  const onlyAt = argv.findIndex((a) => a === '--only' || a.startsWith('--only='));
  const only = onlyAt < 0 ? null : (argv[onlyAt].includes('=') ? argv[onlyAt].split('=')[1] : argv[onlyAt + 1] ?? '').split(',').filter(Boolean);
  const phases = new Set(only ?? ['base', ...(gpuMode && found.length >= 2 ? ['pool', 'cp'] : [])]);
  const unknown = [...phases].filter((p) => !['base', 'pool', 'cp'].includes(p));
  if (unknown.length) throw new Error(`--only takes base, pool and cp, not ${unknown.join(', ')}`);
  if (gpuMode && found.length < 2 && (phases.has('pool') || phases.has('cp'))) throw new Error(`pool and cp need two GPUs; ${found.length} visible`);
  const command = process.env.GPU_TIER_COMMAND || `npm run test:gpu${argv.length ? ' -- ' + argv.join(' ') : ''}`;
  ensureSnapshots(modelsDir, !gpuMode);
  const flux2Marker = marker(modelsDir, 'flux2_dev_4bit');
  const flux2Snapshot = flux2Marker?.quantized?.transformer ? 'nf4-prequantized' : 'unquantized';
  const common: Row = {
    card: gpuMode ? found[0].name : 'cpu',
    card_memory_gb: gpuMode ? found[0].memoryGb : null,
    gpus: gpuMode ? found.length : 0,
    commit: commit(),
    command,
    mode: gpuMode ? 'gpu' : 'reduced (cpu, tiny snapshots)',
    weights: gpuMode ? 'random (real architecture and size)' : 'random (tiny configs)',
    snapshots_gb: Object.fromEntries(ENGINE_IDS.map((e) => [e, marker(modelsDir, e) ? round(marker(modelsDir, e)!.bytes / GB) : null])),
  };
  const run = new Run(common, resultsFile);
  const work = join(tmpdir(), `flexy-gpu-tier-${process.pid}`);
  mkdirSync(work, { recursive: true });
  const standIn = await startTextEncoderStandIn(modelsDir, work);
  const sampler = new MemorySampler(gpuMode);
  const fastPath = gpuMode ? `${FAST_PATH_ENGINE}:compile+sdpa=cudnn` : '';
  if (fastPath) process.env.FLEXY_FAST_PATH = fastPath;
  else delete process.env.FLEXY_FAST_PATH;
  let stack: Stack | null = null;
  try {
    // Phase A: the whole card, three engines preloaded.
    sampler.start();
    const started = performance.now();
    stack = await startStack({
      supervisors: phases.has('base') ? 1 : 0,
      env: {
        MODELS_DIR: modelsDir,
        WORKER_DEVICES: 'auto',
        WORKER_PRELOAD: PRELOAD.join(','),
        FLUX2_TEXT_ENCODER: 'remote',
        FLEXY_TEXT_ENCODER_URL: standIn.url,
        HF_TOKEN: 'gpu-tier-stand-in',
        FLEXY_FAST_PATH: fastPath,
        FLEXY_COMPILE_CACHE: join(work, 'compile-cache'),
        SYNC_WAIT_MS: '900000',
        WORKER_VRAM_BUDGET_GB: '',
        WORKER_DEVICE_MEMORY_GB: '',
      },
      readyTimeoutMs: 900_000,
    });
    const key = adminKey(stack);
    if (phases.has('base')) {
      const supA = stack.supervisors[0];
      await waitForWorkers(stack, key, gpuCount, 900_000);
      const readyS = (performance.now() - started) / 1000;
      await scenarioCoresident(run, stack, key, gpuCount, readyS, sampler, supA);
      await scenarioPromptPics(run, stack, mode, supA, sampler, flux2Snapshot, standIn.calls);

      // Phase B: the same card capped to 32 GiB (reduced: a budget of about one engine), then kill -9.
      await stopProcess(supA);
      const capGb = gpuMode ? 32 : null;
      const engineGb = CAPPED.map((e) => (marker(modelsDir, e)?.bytes ?? 0) / 1024 ** 3);
      const budgetGb = gpuMode ? 26 : round(Math.max(...engineGb) * 1.3, 4);
      const before = await workers(stack, key).catch(() => []);
      const supB = await stack.startSupervisor({
        WORKER_DEVICE_MEMORY_GB: capGb ? String(capGb) : '',
        WORKER_VRAM_BUDGET_GB: String(budgetGb),
        WORKER_PRELOAD: 'flux2_dev_4bit,sd3_medium',
        FLEXY_FAST_PATH: '',
      });
      await waitForWorkers(stack, key, gpuCount, 900_000, (ws) => ws.every((w) => !before.some((b) => b.pid === w.pid)));
      await scenarioCapped(run, stack, mode, key, supB, sampler, capGb, budgetGb);
      await scenarioKill(run, stack, mode, key, supB, sampler);
      await stopProcess(supB);
    } else {
      sampler.stop();
    }
    // Phases C and D: two GPUs (or CPU workers standing in for them in a reduced run).
    const devices = poolDevices(found, gpuMode);
    if (phases.has('pool')) await scenarioPool(run, stack, mode, key, devices, sampler);
    if (phases.has('cp')) await scenarioContextParallel(run, stack, mode, key, devices, sampler, cpResults, common);
  } catch (error) {
    run.failures.push(`aborted: ${(error as Error).message}`);
    console.error(`[gpu-tier] aborted: ${(error as Error).stack}`);
    run.record('aborted', { error: (error as Error).message.slice(0, 2000) }, { completed: false });
  } finally {
    sampler.stop();
    standIn.server.close();
    await stack?.stop();
  }
  writeFileSync(join(work, 'summary.json'), JSON.stringify({ failures: run.failures, rows: run.rows.length }, null, 2));
  console.log(`[gpu-tier] ${run.rows.length} rows → ${resultsFile}; ${run.failures.length ? `FAILED: ${run.failures.join('; ')}` : 'all checks passed'}`);
  return run.failures.length ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
