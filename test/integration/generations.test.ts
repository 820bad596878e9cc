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
