import { QueueName } from '@flexy/contracts';
import { Queue } from 'bullmq';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { api, startStack, type Stack } from '../support/stack';

jest.setTimeout(120_000);

let stack: Stack;
let queue: Queue;
beforeAll(async () => {
  // The gateway alone: whatever passes validation would sit in the queue, where the test sees it.
  stack = await startStack({ supervisors: 0 });
  queue = new Queue(QueueName.Generation, { connection: { host: '127.0.0.1', port: stack.redisPort } });
});
afterAll(async () => {
  await queue?.close();
  await stack?.stop();
});

async function expectNothingQueuedOrRecorded() {
  const counts = await queue.getJobCounts();
  expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(0);
  const db = new Database(join(stack.dataDir, 'flexyface.db'), { readonly: true });
  try {
    expect((db.prepare('SELECT COUNT(*) AS n FROM "Generation"').get() as { n: number }).n).toBe(0);
  } finally {
    db.close();
  }
}

const valid = { prompt: 'a lighthouse', engine: 'flux1_dev' };

/** [case, body, the field the message must name] */
const cases: Array<[string, unknown, string]> = [
  ['unknown engine', { ...valid, engine: 'flux9' }, 'engine'],
  ['path-like engine', { ...valid, engine: '../../etc/passwd' }, 'engine'],
  ['missing engine', { prompt: 'x' }, 'engine'],
  ['unknown field', { ...valid, sampler: 'euler' }, 'sampler'],
  ['empty prompt', { ...valid, prompt: '' }, 'prompt'],
  ['blank prompt', { ...valid, prompt: '   ' }, 'prompt'],
  ['prompt over the engine limit', { ...valid, prompt: 'a'.repeat(2001) }, 'prompt'],
  ['width not a multiple of 16', { ...valid, width: 1000 }, 'width'],
  ['height not a multiple of 8 (realvis_xl)', { ...valid, engine: 'realvis_xl', height: 1020 }, 'height'],
  ['steps out of range', { ...valid, steps: 0 }, 'steps'],
  ['steps above range', { ...valid, steps: 101 }, 'steps'],
  ['guidance out of range', { ...valid, guidance: 11 }, 'guidance'],
  ['negative prompt on a distilled engine', { ...valid, negative_prompt: 'blur' }, 'negative_prompt'],
  ['steps as a string', { ...valid, steps: '20' }, 'steps'],
  ['width as a float', { ...valid, width: 512.5 }, 'width'],
  ['seed negative', { ...valid, seed: -1 }, 'seed'],
  ['seed as a string', { ...valid, seed: '42' }, 'seed'],
  ['prompt as a number', { ...valid, prompt: 42 }, 'prompt'],
  ['negative prompt as an object', { ...valid, engine: 'realvis_xl', negative_prompt: {} }, 'negative_prompt'],
  ['guidance as an object', { ...valid, guidance: {} }, 'guidance'],
  ['width as an array', { ...valid, width: [512] }, 'width'],
  ['num_images above 4', { ...valid, num_images: 5 }, 'num_images'],
];

describe('POST /v1/generations refuses bad input with a 400 naming the field', () => {
  it.each(cases)('%s', async (_name, body, field) => {
    const res = await api(stack, 'POST', '/v1/generations', body);
    expect(res.status).toBe(400);
    expect(res.json.message).toContain(field);
    expect(res.json.fields.map((f: { field: string }) => f.field)).toContain(field);
    await expectNothingQueuedOrRecorded();
  });

  it('refuses a size over the pixel budget with a 422 naming the field (a rule across two fields, stated in words)', async () => {
    const res = await api(stack, 'POST', '/v1/generations', { ...valid, width: 2048, height: 2048 });
    expect(res.status).toBe(422);
    expect(res.json.fields.map((f: { field: string }) => f.field)).toEqual(['width']);
    expect(res.json.message).toMatch(/width × height must be at most 2097152 pixels/);
    await expectNothingQueuedOrRecorded();
  });

  it('refuses malformed JSON', async () => {
    const res = await api(stack, 'POST', '/v1/generations', '{"prompt": "x", ');
    expect(res.status).toBe(400);
    await expectNothingQueuedOrRecorded();
  });

  it('accepts a valid request (control: the checks above fail for the stated reason only)', async () => {
    const res = await api(stack, 'POST', '/v1/generations', valid);
    expect(res.status).toBe(202);
    expect(await queue.getJobCounts('waiting', 'prioritized')).toMatchObject({});
    const job = await queue.getJob(res.json.id);
    expect(job?.data).toMatchObject({ engine: 'flux1_dev', params: { steps: 28, guidance: 3.5, width: 1024, height: 1024 } });
    await job?.remove();
  });
});
