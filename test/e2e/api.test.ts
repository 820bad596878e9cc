import { ENGINE_IDS } from '@flexy/engines';
import { QueueName } from '@flexy/contracts';
import { Queue } from 'bullmq';
import sharp from 'sharp';
import { api, startStack, waitForGeneration, type Stack } from '../support/stack';
import { readSse } from '../support/sse';
import { BRIEF_GENERATE, BRIEF_NERD_SANDBOX } from '../support/brief-requests';

jest.setTimeout(600_000);

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

async function decode(base64: string) {
  return sharp(Buffer.from(base64, 'base64'));
}

describe('PromptPics compatibility', () => {
  it('POST /generate (the brief request) answers 200 with a base64 PNG, engine, seed and timings', async () => {
    const res = await api(stack, 'POST', '/generate', BRIEF_GENERATE);
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ status: 'succeeded', engine: 'flux2_dev_4bit', seed: 42, weights: 'demo', width: 768, height: 768 });
    expect(await (await decode(res.json.image)).metadata()).toMatchObject({ format: 'png', width: 768, height: 768 });
    expect(res.json.image_url).toMatch(/^\/v1\/generations\/gen_[0-9a-f]{32}\/image/);
    for (const k of ['queue_wait_ms', 'text_encode_ms', 'denoise_ms', 'decode_ms', 'encode_store_ms', 'total_ms']) expect(typeof res.json.timings[k]).toBe('number');
  });

  it('POST /generate without an engine uses flux1_dev', async () => {
    const res = await api(stack, 'POST', '/generate', { prompt: 'default engine', seed: 1, steps: 2, width: 64, height: 64 });
    expect(res.status).toBe(200);
    expect(res.json.engine).toBe('flux1_dev');
  });

  it('POST /nerd-sandbox (the brief request) runs all four engines with one seed, same seed → same images', async () => {
    const first = await api(stack, 'POST', '/nerd-sandbox', BRIEF_NERD_SANDBOX);
    expect(first.status).toBe(200);
    expect(first.json.results.map((r: { engine: string }) => r.engine).sort()).toEqual([...ENGINE_IDS].sort());
    for (const r of first.json.results) {
      expect(r).toMatchObject({ status: 'succeeded', weights: 'demo' });
      expect(r.latency_ms).toBeGreaterThan(0);
      for (const k of ['queue_wait_ms', 'load_ms', 'text_encode_ms', 'denoise_ms', 'decode_ms', 'encode_store_ms']) expect(typeof r.timings[k]).toBe('number');
      expect(await (await decode(r.image)).metadata()).toMatchObject({ width: 768, height: 768 });
    }
    const again = await api(stack, 'POST', '/nerd-sandbox', { ...BRIEF_NERD_SANDBOX, engines: ['flux1_dev', 'realvis_xl'] });
    expect(again.status).toBe(200);
    for (const r of again.json.results) {
      const before = first.json.results.find((x: { engine: string }) => x.engine === r.engine);
      const [a, b] = await Promise.all([(await decode(before.image)).raw().toBuffer(), (await decode(r.image)).raw().toBuffer()]);
      expect(a.equals(b)).toBe(true);
    }
  });

  it('an engine that cannot take a setting says so in its own result; the others still run', async () => {
    // 1000 px is a multiple of 8 (RealVisXL) but not of 16 (the others).
    const res = await api(stack, 'POST', '/nerd-sandbox', { prompt: 'odd size', seed: 9, steps: 2, width: 1000, height: 64 });
    expect(res.status).toBe(200);
    const byEngine = Object.fromEntries(res.json.results.map((r: { engine: string }) => [r.engine, r]));
    expect(byEngine.realvis_xl.status).toBe('succeeded');
    for (const e of ['flux1_dev', 'sd3_medium', 'flux2_dev_4bit']) {
      expect(byEngine[e]).toMatchObject({ status: 'skipped', error: { code: 'bad_input', field: 'width' } });
    }
  });
});

describe('sandbox runs', () => {
  it('shows partial results as each engine finishes', async () => {
    const created = await api(stack, 'POST', '/v1/sandbox-runs', { prompt: 'partial', seed: 4, steps: 2, width: 64, height: 64, engines: ['sd3_medium', 'realvis_xl'] });
    expect(created.status).toBe(202);
    const statuses = new Set<string>();
    let run = created.json;
    for (let i = 0; i < 600 && run.status !== 'completed'; i++) {
      run.results.forEach((r: { status: string }) => statuses.add(r.status));
      await new Promise((r) => setTimeout(r, 50));
      run = (await api(stack, 'GET', `/v1/sandbox-runs/${created.json.id}`)).json;
    }
    expect(run.status).toBe('completed');
    expect(run.results.every((r: { status: string; image_url: string }) => r.status === 'succeeded' && r.image_url)).toBe(true);
    expect(statuses.has('queued') || statuses.has('running')).toBe(true);
  });
});

describe('sandbox run events', () => {
  it('merges every engine of the run into one stream, tagged by engine, ending with done; resumable', async () => {
    const created = await api(stack, 'POST', '/v1/sandbox-runs', { prompt: 'merged', seed: 5, steps: 3, width: 64, height: 64, engines: ['flux1_dev', 'realvis_xl'] });
    const url = `${stack.url}/v1/sandbox-runs/${created.json.id}/events`;
    const all = await readSse(url, { until: (m) => m.event === 'done' });
    for (const engine of ['flux1_dev', 'realvis_xl']) {
      const mine = all.messages.filter((m) => m.data.engine === engine);
      expect(mine.filter((m) => m.event === 'progress').map((m) => m.data.step)).toEqual([1, 2, 3]);
      expect(mine[mine.length - 1].event).toBe('succeeded');
    }
    const done = all.messages[all.messages.length - 1];
    expect(done.event).toBe('done');
    expect(done.data.status).toBe('completed');
    const resumed = await readSse(url, { lastEventId: all.messages[2].id!, until: (m) => m.event === 'done' });
    expect(resumed.messages.map((m) => `${m.event}:${m.data.engine ?? ''}:${m.data.step ?? ''}`)).toEqual(
      all.messages.slice(3).map((m) => `${m.event}:${m.data.engine ?? ''}:${m.data.step ?? ''}`),
    );
  });
});

describe('live progress over Server-Sent Events', () => {
  it('streams queued, running, progress 1..N and succeeded in order, and resumes from Last-Event-ID', async () => {
    const created = await api(stack, 'POST', '/v1/generations', { prompt: 'sse', engine: 'sd3_medium', seed: 5, steps: 8, width: 64, height: 64 });
    const url = `${stack.url}/v1/generations/${created.json.id}/events`;
    const all = await readSse(url, { until: (m) => ['succeeded', 'failed', 'cancelled'].includes(m.event) });
    expect(all.status).toBe(200);
    const types = all.messages.map((m) => m.event);
    expect(types[0]).toBe('queued');
    expect(types).toContain('running');
    expect(types[types.length - 1]).toBe('succeeded');
    const steps = all.messages.filter((m) => m.event === 'progress').map((m) => m.data.step);
    expect(steps).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(types.indexOf('running')).toBeLessThan(types.indexOf('progress'));
    expect(all.messages.some((m) => m.event === 'preview' && m.data.image.startsWith('data:image/png;base64,'))).toBe(true);

    // Resume after the fourth message: exactly the rest arrives.
    const resumed = await readSse(url, { lastEventId: all.messages[3].id!, until: (m) => m.event === 'succeeded' });
    expect(resumed.messages.map((m) => m.id)).toEqual(all.messages.slice(4).map((m) => m.id));

    // A client that connects after the end gets the final event at once.
    const t0 = Date.now();
    const late = await readSse(url, { until: (m) => m.event === 'succeeded', timeoutMs: 10_000 });
    expect(late.messages[late.messages.length - 1].event).toBe('succeeded');
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('answers 404 for events of an unknown generation', async () => {
    expect((await api(stack, 'GET', '/v1/generations/gen_00000000000000000000000000000000/events')).status).toBe(404);
  });
});

describe('cancel', () => {
  it('stops a running generation mid-denoise and records it cancelled', async () => {
    const created = await api(stack, 'POST', '/v1/generations', { prompt: 'long run', engine: 'flux1_dev', seed: 6, steps: 100, width: 512, height: 512 });
    const url = `${stack.url}/v1/generations/${created.json.id}/events`;
    await readSse(url, { until: (m) => m.event === 'progress' && m.data.step >= 2 });
    const cancel = await api(stack, 'POST', `/v1/generations/${created.json.id}/cancel`);
    expect(cancel.status).toBe(202);
    expect(cancel.json.status).toBe('cancelling');
    const g = await waitForGeneration(stack, created.json.id);
    expect(g.status).toBe('cancelled');
    const events = await readSse(url, { until: (m) => m.event === 'cancelled' });
    const lastStep = Math.max(...events.messages.filter((m) => m.event === 'progress').map((m) => m.data.step));
    expect(lastStep).toBeLessThan(100);
    // Finished: a second cancel is a conflict; DELETE now deletes it.
    expect((await api(stack, 'POST', `/v1/generations/${created.json.id}/cancel`)).status).toBe(409);
    expect((await api(stack, 'DELETE', `/v1/generations/${created.json.id}`)).status).toBe(204);
    expect((await api(stack, 'GET', `/v1/generations/${created.json.id}`)).status).toBe(404);
  });

  it('removes a queued generation before it runs', async () => {
    const blocker = await api(stack, 'POST', '/v1/generations', { prompt: 'blocker', engine: 'flux1_dev', seed: 7, steps: 40, width: 512, height: 512 });
    const queued = await api(stack, 'POST', '/v1/generations', { prompt: 'never runs', engine: 'flux1_dev', seed: 8, steps: 2, width: 64, height: 64 });
    const deleted = await api(stack, 'POST', '/v1/generations', { prompt: 'deleted before it runs', engine: 'flux1_dev', seed: 9, steps: 2, width: 64, height: 64 });
    const cancel = await api(stack, 'POST', `/v1/generations/${queued.json.id}/cancel`);
    expect(cancel.json.status).toBe('cancelled');
    expect((await api(stack, 'GET', `/v1/generations/${queued.json.id}`)).json.status).toBe('cancelled');
    // DELETE cancels and removes at once: gone from every read.
    expect((await api(stack, 'DELETE', `/v1/generations/${deleted.json.id}`)).status).toBe(204);
    expect((await api(stack, 'GET', `/v1/generations/${deleted.json.id}`)).status).toBe(404);
    await waitForGeneration(stack, blocker.json.id);
    expect((await api(stack, 'GET', `/v1/generations/${queued.json.id}`)).json).toMatchObject({ status: 'cancelled', started_at: null });
    expect((await api(stack, 'GET', `/v1/generations/${deleted.json.id}`)).status).toBe(404);
  });

  it('deletes a running generation: gone at once, its worker stops within a step', async () => {
    const created = await api(stack, 'POST', '/v1/generations', { prompt: 'deleted while running', engine: 'flux1_dev', seed: 10, steps: 100, width: 512, height: 512 });
    await readSse(`${stack.url}/v1/generations/${created.json.id}/events`, { until: (m) => m.event === 'progress' });
    const del = await api(stack, 'DELETE', `/v1/generations/${created.json.id}`);
    expect(del.status).toBe(202);
    expect(del.json).toEqual({ id: created.json.id, status: 'cancelling' });
    expect((await api(stack, 'GET', `/v1/generations/${created.json.id}`)).status).toBe(404);
    // The worker is free again: the next job runs.
    const next = await api(stack, 'POST', '/v1/generations', { prompt: 'after the delete', engine: 'flux1_dev', seed: 11, steps: 1, width: 64, height: 64 }, { prefer: 'wait=120' });
    expect(next.json.status).toBe('succeeded');
  });
});

describe('batches', () => {
  it('runs 100 items across engines at batch priority, with counts and per-item results', async () => {
    const prompts = Array.from({ length: 25 }, (_, i) => `batch item ${i}`);
    const created = await api(stack, 'POST', '/v1/batches', { prompts, engines: ['flux1_dev', 'sd3_medium'], seeds: [1, 2], steps: 1, width: 64, height: 64 });
    expect(created.status).toBe(202);
    expect(created.json).toMatchObject({ item_count: 100, status: 'running' });
    // Interactive work submitted after the batch still runs before most of it.
    const interactive = await api(stack, 'POST', '/v1/generations', { prompt: 'jump the queue', engine: 'realvis_xl', seed: 3, steps: 1, width: 64, height: 64 }, { prefer: 'wait=120' });
    expect(interactive.status).toBe(200);
    const midway = (await api(stack, 'GET', `/v1/batches/${created.json.id}`)).json;
    expect(midway.counts.succeeded).toBeLessThan(100);

    let batch = midway;
    for (let i = 0; i < 1200 && batch.status !== 'completed'; i++) {
      await new Promise((r) => setTimeout(r, 250));
      batch = (await api(stack, 'GET', `/v1/batches/${created.json.id}`)).json;
    }
    expect(batch.status).toBe('completed');
    expect(batch.counts).toEqual({ queued: 0, running: 0, succeeded: 100, failed: 0, cancelled: 0 });
    expect(batch.items).toHaveLength(100);
    expect(new Set(batch.items.map((i: { engine: string; prompt: string; seed: number }) => `${i.engine}|${i.prompt}|${i.seed}`)).size).toBe(100);
  });

  it('cancels the rest of a batch', async () => {
    const created = await api(stack, 'POST', '/v1/batches', { prompts: ['a', 'b', 'c', 'd', 'e'], engines: ['flux1_dev'], steps: 30, width: 256, height: 256 });
    const cancel = await api(stack, 'POST', `/v1/batches/${created.json.id}/cancel`);
    expect(cancel.status).toBe(202);
    let batch = (await api(stack, 'GET', `/v1/batches/${created.json.id}`)).json;
    for (let i = 0; i < 200 && batch.counts.running + batch.counts.queued > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      batch = (await api(stack, 'GET', `/v1/batches/${created.json.id}`)).json;
    }
    expect(batch.status).toBe('cancelled');
    expect(batch.counts.cancelled).toBeGreaterThanOrEqual(4);
    expect(batch.counts.queued + batch.counts.running).toBe(0);
  });

  it('refuses more than 1,000 items, naming the field', async () => {
    const res = await api(stack, 'POST', '/v1/batches', { prompts: Array.from({ length: 501 }, (_, i) => `p${i}`), engines: ['flux1_dev', 'sd3_medium'] });
    // Each list is within its documented size; their product is not: a 422.
    expect(res.status).toBe(422);
    expect(res.json.message).toMatch(/prompts/);
  });
});

describe('idempotency', () => {
  it('the same create sent twice with one Idempotency-Key makes one job', async () => {
    const body = { prompt: 'only once', engine: 'realvis_xl', seed: 11, steps: 1, width: 64, height: 64 };
    const headers = { 'idempotency-key': 'abc-123' };
    const [a, b] = await Promise.all([api(stack, 'POST', '/v1/generations', body, headers), api(stack, 'POST', '/v1/generations', body, headers)]);
    expect(a.json.id).toBe(b.json.id);
    const queue = new Queue(QueueName.Generation, { connection: { host: '127.0.0.1', port: stack.redisPort } });
    try {
      const jobs = await queue.getJobs(['waiting', 'prioritized', 'active', 'completed', 'delayed']);
      expect(jobs.filter((j) => j.data.params?.prompt === 'only once')).toHaveLength(1);
    } finally {
      await queue.close();
    }
    const other = await api(stack, 'POST', '/v1/generations', { ...body, seed: 12 }, headers);
    expect(other.status).toBe(422);
    expect(other.json.message).toMatch(/Idempotency-Key/);
  });
});

describe('reference images (FLUX.2)', () => {
  it('accepts uploaded references and refuses URLs and non-images', async () => {
    const ref = await sharp({ create: { width: 96, height: 80, channels: 3, background: '#884422' } }).png().toBuffer();
    const dataUri = `data:image/png;base64,${ref.toString('base64')}`;
    const res = await api(stack, 'POST', '/v1/generations', { prompt: 'with a reference', engine: 'flux2_dev_4bit', seed: 1, steps: 2, width: 64, height: 64, references: [dataUri, dataUri] }, { prefer: 'wait=120' });
    expect(res.status).toBe(200);
    expect(res.json.status).toBe('succeeded');

    const url = await api(stack, 'POST', '/v1/generations', { prompt: 'x', engine: 'flux2_dev_4bit', references: ['http://127.0.0.1/evil.png'] });
    expect(url.status).toBe(400);
    expect(url.json.message).toMatch(/references/);
    const fake = await api(stack, 'POST', '/v1/generations', { prompt: 'x', engine: 'flux2_dev_4bit', references: [`data:image/png;base64,${Buffer.from('not an image').toString('base64')}`] });
    // A data URI of the documented form whose content is not a usable image: 422.
    expect(fake.status).toBe(422);
    expect(fake.json.message).toMatch(/references\[0\]/);
    const tiny = await sharp({ create: { width: 48, height: 32, channels: 3, background: '#884422' } }).png().toBuffer();
    const small = await api(stack, 'POST', '/v1/generations', { prompt: 'x', engine: 'flux2_dev_4bit', references: [`data:image/png;base64,${tiny.toString('base64')}`] });
    expect(small.status).toBe(422);
    expect(small.json.message).toMatch(/references\[0\].*64/);
    const notFlux2 = await api(stack, 'POST', '/v1/generations', { prompt: 'x', engine: 'flux1_dev', references: [dataUri] });
    expect(notFlux2.status).toBe(400);
    expect(notFlux2.json.message).toMatch(/references/);
  });
});
