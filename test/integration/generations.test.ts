import { GENERATION_PHASES, workerStatusKey } from '@flexy/contracts';
import { ENGINE_CATALOG, ENGINE_IDS } from '@flexy/engines';
import { readPngText } from '@flexy/storage';
import IORedis from 'ioredis';
import sharp from 'sharp';
import { poll } from '../fault/fault-tools';
import { api, startStack, waitForGeneration, type Stack } from '../support/stack';

jest.setTimeout(300_000);

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

async function generate(body: Record<string, unknown>) {
  const created = await api(stack, 'POST', '/v1/generations', body);
  expect(created.status).toBe(202);
  expect(created.json).toMatchObject({ status: 'queued', links: { self: `/v1/generations/${created.json.id}` } });
  const done = await waitForGeneration(stack, created.json.id);
  return done;
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (label values unescaped). */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of the samples of `name` whose labels include `labels` (0 when none). */
function value(samples: Sample[], name: string, labels: Record<string, string>): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

async function fetchBytes(path: string) {
  const res = await fetch(stack.url + path);
  return { status: res.status, type: res.headers.get('content-type'), bytes: Buffer.from(await res.arrayBuffer()) };
}

describe.each(ENGINE_IDS)('%s through the real worker', (engine) => {
  it('returns a decodable PNG whose embedded parameters match the request', async () => {
    const spec = ENGINE_CATALOG[engine];
    const request = {
      prompt: `a red bicycle for ${engine}`,
      engine,
      seed: 1234,
      steps: 3,
      guidance: spec.defaults.guidance,
      width: 128,
      height: 64,
      ...(spec.limits.negativePrompt ? { negative_prompt: 'blurry' } : {}),
    };
    const g = await generate(request);
    expect(g.status).toBe('succeeded');
    expect(g.weights).toBe('demo');
    expect(g.parameters).toMatchObject({ prompt: request.prompt, seed: 1234, steps: 3, width: 128, height: 64 });
    for (const key of ['text_encode_ms', 'denoise_ms', 'decode_ms', 'encode_store_ms', 'total_ms']) {
      expect(typeof g.timings[key]).toBe('number');
    }

    const png = await fetchBytes(g.image_url);
    expect(png.status).toBe(200);
    expect(png.type).toBe('image/png');
    const meta = await sharp(png.bytes).metadata();
    expect(meta).toMatchObject({ format: 'png', width: 128, height: 64 });
    const text = readPngText(png.bytes);
    expect(text).toMatchObject({
      prompt: request.prompt,
      engine,
      seed: '1234',
      steps: '3',
      guidance: String(request.guidance),
      size: '128x64',
      weights: 'demo',
      negative_prompt: request.negative_prompt ?? '',
    });
    expect(text.model_revision).toBe(g.model_revision);
    expect(text.model_revision).toMatch(/^demo-/);
  });
});

describe('determinism and formats', () => {
  it('gives identical pixels for the same request and seed, different ones for another seed', async () => {
    const body = { prompt: 'a quiet harbour', engine: 'flux1_dev', seed: 77, steps: 3, width: 64, height: 64 };
    const [a, b, c] = await Promise.all([generate(body), generate(body), generate({ ...body, seed: 78 })]);
    const pixels = async (g: { image_url: string }) => sharp((await fetchBytes(g.image_url)).bytes).raw().toBuffer();
    const [pa, pb, pc] = await Promise.all([pixels(a), pixels(b), pixels(c)]);
    expect(pa.equals(pb)).toBe(true);
    expect(pa.equals(pc)).toBe(false);
  });

  it('converts the stored image to WebP and JPEG on request', async () => {
    const g = await generate({ prompt: 'format check', engine: 'realvis_xl', seed: 5, steps: 2, width: 64, height: 64 });
    for (const format of ['webp', 'jpeg'] as const) {
      const img = await fetchBytes(`${g.image_url}&format=${format}`);
      expect(img.status).toBe(200);
      expect(img.type).toBe(`image/${format}`);
      expect((await sharp(img.bytes).metadata()).format).toBe(format);
    }
    const bad = await api(stack, 'GET', `${g.image_url}&format=gif`);
    expect(bad.status).toBe(400);
    expect(bad.json.message).toMatch(/format/);
  });

  it('answers 404 for an unknown generation', async () => {
    expect((await api(stack, 'GET', '/v1/generations/gen_00000000000000000000000000000000')).status).toBe(404);
    expect((await api(stack, 'GET', '/v1/generations/../../etc/passwd')).status).toBe(404);
  });
});

describe('live state', () => {
  it('/v1/engines lists every engine as available on demo weights, with the worker that serves it', async () => {
    const res = await api(stack, 'GET', '/v1/engines');
    expect(res.status).toBe(200);
    expect(res.json.engines.map((e: { id: string }) => e.id)).toEqual([...ENGINE_IDS]);
    for (const e of res.json.engines) {
      expect(e).toMatchObject({ available: true, weights: { state: 'demo', fix: null } });
      expect(e.workers).toHaveLength(1);
      expect(e.health).toEqual({ state: 'available', available_on: e.workers, unavailable_on: [] });
      expect(e.limits.sizeMultiple).toBe(ENGINE_CATALOG[e.id as keyof typeof ENGINE_CATALOG].limits.sizeMultiple);
    }
    const flux1 = res.json.engines.find((e: { id: string }) => e.id === 'flux1_dev');
    expect(flux1.typical_s_per_step).toBeGreaterThan(0);
  });

  it('/health/ready reports Redis, the database and a ready worker', async () => {
    const res = await api(stack, 'GET', '/health/ready');
    expect(res.status).toBe(200);
    expect(res.json.checks).toEqual({ redis: true, database: true, workers: true });
    for (const check of ['redis', 'database', 'workers']) expect(res.json.details[check]).toEqual({ ms: expect.any(Number), error: null });
    expect(res.json.workers[0].state).toMatch(/ready|busy/);
    // Health per engine, per worker and across them.
    expect(res.json.workers[0].engines).toContainEqual({ engine: 'flux1_dev', state: 'available', reason: null, retry_at: null });
    expect(res.json.engines.flux1_dev).toEqual({ state: 'available', available_on: [res.json.workers[0].id], unavailable_on: [] });
  });

  it('/metrics speaks the Prometheus text format with queue, worker and phase series', async () => {
    const res = await fetch(`${stack.url}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toMatch(/^# TYPE flexy_queue_jobs gauge$/m);
    expect(text).toMatch(/^flexy_queue_jobs\{queue="generation",state="completed"\} \d+$/m);
    expect(text).toMatch(/^flexy_worker_up\{worker="[^"]+",state="(ready|busy)"\} 1$/m);
    expect(text).toMatch(/^flexy_worker_restarts\{worker="[^"]+"\} 0$/m);
    expect(text).toMatch(/^flexy_engine_available\{worker="[^"]+",engine="flux1_dev"\} 1$/m);
    expect(text).toMatch(/^flexy_generation_phase_seconds_mean\{engine="flux1_dev",phase="denoise"\} [\d.e-]+$/m);
    expect(text).toMatch(/^flexy_generations\{engine="flux1_dev",status="succeeded"\} \d+$/m);
    // the process and Node metrics of the answering gateway process
    expect(text).toMatch(/^process_cpu_user_seconds_total \d/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
  });

  it('/metrics counts every generation a supervisor ran, and histograms each phase, as the records say', async () => {
    const engine = 'flux1_dev';
    // The supervisor publishes its registry every few seconds: wait for it to catch up with the records.
    const settled = await poll('outcomes to match the records', async () => {
      const series = parseMetrics(await (await fetch(`${stack.url}/metrics`)).text());
      const recorded = value(series, 'flexy_generations', { engine, status: 'succeeded' });
      const counted = value(series, 'flexy_generation_outcomes_total', { engine, status: 'succeeded', error_code: '' });
      return recorded > 0 && counted === recorded ? { series, recorded } : null;
    }, 60_000, 500);
    const { series, recorded } = settled;
    expect(series.find((s) => s.name === 'flexy_generation_outcomes_total')?.labels.supervisor).toEqual(expect.any(String));
    for (const phase of GENERATION_PHASES) {
      expect(value(series, 'flexy_generation_phase_seconds_count', { engine, phase })).toBe(recorded);
      expect(value(series, 'flexy_generation_phase_seconds_bucket', { engine, phase, le: '+Inf' })).toBe(recorded);
    }
    // Buckets are cumulative, and denoising a demo image takes more than nothing.
    const buckets = series.filter((s) => s.name === 'flexy_generation_phase_seconds_bucket' && s.labels.engine === engine && s.labels.phase === 'denoise');
    expect(buckets.length).toBeGreaterThan(10);
    expect(buckets.map((b) => b.value)).toEqual([...buckets.map((b) => b.value)].sort((a, b) => a - b));
    expect(value(series, 'flexy_generation_phase_seconds_sum', { engine, phase: 'denoise' })).toBeGreaterThan(0);
    expect(value(series, 'flexy_supervisor_process_cpu_user_seconds_total', {})).toBeGreaterThan(0);
  });

  it('/metrics escapes label values (the library does, not a character replacement)', async () => {
    const redis = new IORedis(stack.redisUrl);
    const id = 'odd "host"\\name\nsecond line/gpu0';
    const status = { id, host: 'odd', device: 'gpu0', state: 'ready', pid: 1, restarts: 2, lastError: null, currentJob: null, residency: null, engines: [], updatedAt: Date.now() };
    try {
      await redis.set(workerStatusKey(id), JSON.stringify(status), 'EX', 60);
      const text = await (await fetch(`${stack.url}/metrics`)).text();
      expect(text).toContain('flexy_worker_up{worker="odd \\"host\\"\\\\name\\nsecond line/gpu0",state="ready"} 1\n');
      expect(text).toContain('flexy_worker_restarts{worker="odd \\"host\\"\\\\name\\nsecond line/gpu0"} 2\n');
    } finally {
      await redis.del(workerStatusKey(id));
      redis.disconnect();
    }
  });
});
