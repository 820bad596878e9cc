import { ENGINE_CATALOG, ENGINE_IDS } from '@flexy/engines';
import { readPngText } from '@flexy/storage';
import sharp from 'sharp';
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
      expect(e.limits.sizeMultiple).toBe(ENGINE_CATALOG[e.id as keyof typeof ENGINE_CATALOG].limits.sizeMultiple);
    }
    const flux1 = res.json.engines.find((e: { id: string }) => e.id === 'flux1_dev');
    expect(flux1.typical_s_per_step).toBeGreaterThan(0);
  });

  it('/health/ready reports Redis, the database and a ready worker', async () => {
    const res = await api(stack, 'GET', '/health/ready');
    expect(res.status).toBe(200);
    expect(res.json.checks).toEqual({ redis: true, database: true, workers: true });
    expect(res.json.workers[0].state).toMatch(/ready|busy/);
  });

  it('/metrics speaks the Prometheus text format with queue, worker and phase series', async () => {
    const res = await fetch(`${stack.url}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toMatch(/^# TYPE flexy_queue_jobs gauge$/m);
    expect(text).toMatch(/^flexy_queue_jobs\{queue="generation",state="completed"\} \d+$/m);
    expect(text).toMatch(/^flexy_worker_up\{worker="[^"]+",state="(ready|busy)"\} 1$/m);
    expect(text).toMatch(/^flexy_generation_phase_seconds_mean\{engine="flux1_dev",phase="denoise"\} [\d.e-]+$/m);
    expect(text).toMatch(/^flexy_generations\{engine="flux1_dev",status="succeeded"\} \d+$/m);
  });
});
