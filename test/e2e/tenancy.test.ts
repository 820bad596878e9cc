import { api, startStack, type Stack } from '../support/stack';
import { pollJson } from '../support/poll';
import { createKeys, type TestKey } from '../support/keys';
import { readSse } from '../support/sse';

jest.setTimeout(300_000);

/** The cheapest real work: one step at 64×64. */
const SMALL = { steps: 1, width: 64, height: 64 };
/** Work that keeps the one CPU worker busy long enough to be cancelled while it waits or runs. */
const LONG = { engine: 'flux1_dev', steps: 60, width: 256, height: 256 };
const FORMATS = ['png', 'webp', 'jpeg'] as const;
const TERMINAL = ['succeeded', 'failed', 'cancelled'];

let stack: Stack;
let alice: TestKey;
let bob: TestKey;
let reader: TestKey;
let admin: TestKey;

beforeAll(async () => {
  stack = await startStack({ env: { AUTH_MODE: 'keys' } });
  ({ alice, bob, reader, admin } = await createKeys(stack, { alice: {}, bob: {}, reader: { role: 'readonly' }, admin: { role: 'admin' } }));
});
afterAll(async () => {
  await stack?.stop();
});

/** Polls `path` as `who` until `done` holds for its JSON. */
const until = <T = any>(path: string, who: TestKey, done: (json: T) => boolean) => pollJson<T>(stack, path, who.auth, done);

const ids = (page: { items: Array<{ id: string }> }) => page.items.map((i) => i.id);

/** Every id in a list, following next_cursor to the end. */
async function listAll(path: string, who: TestKey | null, query = ''): Promise<string[]> {
  const all: string[] = [];
  let cursor: string | null = null;
  do {
    const r: { status: number; json: { items: Array<{ id: string }>; next_cursor: string | null } } = await api(
      stack,
      'GET',
      `${path}?limit=100${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      undefined,
      who?.auth ?? {},
    );
    expect(r.status).toBe(200);
    all.push(...ids(r.json));
    cursor = r.json.next_cursor;
  } while (cursor);
  return all;
}

describe('with API keys: two users, a read-only key and an admin', () => {
  /** Alice's finished work, one piece from each creating route. */
  const made = { generation: '', generate: '', nerdSandbox: '', sandboxRun: '', batch: '', batchItems: [] as string[], bobs: '' };
  const startedAt = new Date(Date.now() - 1000).toISOString();

  beforeAll(async () => {
    const created = await api(stack, 'POST', '/v1/generations', { prompt: 'alice private', engine: 'flux1_dev', seed: 1, ...SMALL }, { ...alice.auth, prefer: 'wait=120' });
    expect(created.status).toBe(200);
    made.generation = created.json.id;

    const generated = await api(stack, 'POST', '/generate', { prompt: 'alice via promptpics', engine: 'realvis_xl', seed: 2, ...SMALL }, alice.auth);
    expect(generated.status).toBe(200);
    made.generate = generated.json.id;

    const nerd = await api(stack, 'POST', '/nerd-sandbox', { prompt: 'alice side by side', seed: 3, ...SMALL, engines: ['realvis_xl', 'sd3_medium'] }, alice.auth);
    expect(nerd.status).toBe(200);
    expect(nerd.json.status).toBe('completed');
    made.nerdSandbox = nerd.json.id;

    const run = await api(stack, 'POST', '/v1/sandbox-runs', { prompt: 'alice async run', seed: 4, ...SMALL, engines: ['flux1_dev', 'realvis_xl'] }, alice.auth);
    expect(run.status).toBe(202);
    made.sandboxRun = run.json.id;

    const batch = await api(stack, 'POST', '/v1/batches', { prompts: ['alice batch a', 'alice batch b'], engines: ['flux1_dev'], seeds: [5], ...SMALL }, alice.auth);
    expect(batch.status).toBe(202);
    made.batch = batch.json.id;

    const bobs = await api(stack, 'POST', '/v1/generations', { prompt: 'bob private', engine: 'flux1_dev', seed: 6, ...SMALL }, { ...bob.auth, prefer: 'wait=120' });
    expect(bobs.status).toBe(200);
    made.bobs = bobs.json.id;

    await until(`/v1/sandbox-runs/${made.sandboxRun}`, alice, (r) => r.status === 'completed');
    const finished = await until(`/v1/batches/${made.batch}`, alice, (b) => b.status === 'completed');
    made.batchItems = ids(finished);
    expect(made.batchItems).toHaveLength(2);
  });

  it('the owner reads, downloads and streams everything it made', async () => {
    for (const id of [made.generation, made.generate, ...made.batchItems]) {
      const g = await api(stack, 'GET', `/v1/generations/${id}`, undefined, alice.auth);
      expect(g.status).toBe(200);
      expect(g.json.status).toBe('succeeded');
    }
    for (const format of FORMATS) {
      const img = await api(stack, 'GET', `/v1/generations/${made.generation}/image?format=${format}`, undefined, alice.auth);
      expect(img.status).toBe(200);
      expect(img.headers.get('content-type')).toBe(`image/${format}`);
    }
    const events = await readSse(`${stack.url}/v1/generations/${made.generation}/events`, { headers: alice.auth, until: (m) => TERMINAL.includes(m.event), timeoutMs: 10_000 });
    expect(events.status).toBe(200);
    expect(events.messages[events.messages.length - 1].event).toBe('succeeded');
    const runEvents = await readSse(`${stack.url}/v1/sandbox-runs/${made.sandboxRun}/events`, { headers: alice.auth, until: (m) => m.event === 'done', timeoutMs: 10_000 });
    expect(runEvents.status).toBe(200);
    expect(runEvents.messages[runEvents.messages.length - 1]).toMatchObject({ event: 'done', data: { status: 'completed' } });
    for (const id of [made.nerdSandbox, made.sandboxRun]) expect((await api(stack, 'GET', `/v1/sandbox-runs/${id}`, undefined, alice.auth)).status).toBe(200);
    expect((await api(stack, 'GET', `/v1/batches/${made.batch}`, undefined, alice.auth)).status).toBe(200);

    const generations = await listAll('/v1/generations', alice);
    expect(generations).toEqual(expect.arrayContaining([made.generation, made.generate, ...made.batchItems]));
    expect(generations).not.toContain(made.bobs);
    expect(await listAll('/v1/sandbox-runs', alice)).toEqual(expect.arrayContaining([made.nerdSandbox, made.sandboxRun]));
    expect(await listAll('/v1/batches', alice)).toEqual([made.batch]);
  });

  it("another user gets 404 for every read, image, stream and action on it, and never sees it in a list", async () => {
    for (const id of [made.generation, made.generate, ...made.batchItems]) {
      expect((await api(stack, 'GET', `/v1/generations/${id}`, undefined, bob.auth)).status).toBe(404);
      for (const format of FORMATS) expect((await api(stack, 'GET', `/v1/generations/${id}/image?format=${format}`, undefined, bob.auth)).status).toBe(404);
      expect((await api(stack, 'GET', `/v1/generations/${id}/events`, undefined, bob.auth)).status).toBe(404);
      expect((await api(stack, 'POST', `/v1/generations/${id}/cancel`, undefined, bob.auth)).status).toBe(404);
      expect((await api(stack, 'DELETE', `/v1/generations/${id}`, undefined, bob.auth)).status).toBe(404);
    }
    for (const id of [made.nerdSandbox, made.sandboxRun]) {
      expect((await api(stack, 'GET', `/v1/sandbox-runs/${id}`, undefined, bob.auth)).status).toBe(404);
      expect((await api(stack, 'GET', `/v1/sandbox-runs/${id}/events`, undefined, bob.auth)).status).toBe(404);
    }
    expect((await api(stack, 'GET', `/v1/batches/${made.batch}`, undefined, bob.auth)).status).toBe(404);
    expect((await api(stack, 'POST', `/v1/batches/${made.batch}/cancel`, undefined, bob.auth)).status).toBe(404);

    // The 404 is the same as for an id that does not exist: nothing tells Bob that Alice's is there.
    const unknown = await api(stack, 'GET', '/v1/generations/gen_00000000000000000000000000000000', undefined, bob.auth);
    const hers = await api(stack, 'GET', `/v1/generations/${made.generation}`, undefined, bob.auth);
    expect(Object.keys(hers.json).sort()).toEqual(Object.keys(unknown.json).sort());
    expect(hers.text).not.toContain('alice');

    // Alice's things are untouched by Bob's attempts.
    expect((await api(stack, 'GET', `/v1/generations/${made.generation}`, undefined, alice.auth)).json.status).toBe('succeeded');

    const aliceGenerations = [made.generation, made.generate, ...made.batchItems];
    for (const query of ['', '&status=succeeded', '&engine=flux1_dev', `&created_after=${startedAt}`, `&created_before=${new Date(Date.now() + 60_000).toISOString()}`]) {
      const bobs = await listAll('/v1/generations', bob, query);
      expect(bobs).toEqual([made.bobs]);
      expect(bobs.filter((id) => aliceGenerations.includes(id))).toEqual([]);
    }
    for (const query of ['', '&status=completed']) {
      expect(await listAll('/v1/sandbox-runs', bob, query)).toEqual([]);
      expect(await listAll('/v1/batches', bob, query)).toEqual([]);
    }
  });

  it('a read-only key gets 403 on every write, before its body is validated, and 200 on its own reads', async () => {
    const writes: Array<[string, string, unknown]> = [
      ['POST', '/v1/generations', {}],
      ['POST', '/v1/generations', { prompt: 'valid', engine: 'flux1_dev', ...SMALL }],
      ['POST', '/v1/generations', { prompt: 42, engine: 'nope', width: -1 }],
      ['POST', '/generate', {}],
      ['POST', '/generate', { prompt: 'valid', ...SMALL }],
      ['POST', '/nerd-sandbox', {}],
      ['POST', '/nerd-sandbox', { prompt: 'valid', ...SMALL, engines: ['realvis_xl'] }],
      ['POST', '/v1/sandbox-runs', { engines: 'all' }],
      ['POST', '/v1/sandbox-runs', { prompt: 'valid', ...SMALL, engines: ['realvis_xl'] }],
      ['POST', '/v1/batches', { prompts: [] }],
      ['POST', '/v1/batches', { prompts: ['valid'], engines: ['flux1_dev'], ...SMALL }],
      ['POST', `/v1/generations/${made.generation}/cancel`, undefined],
      ['POST', '/v1/generations/not-an-id/cancel', undefined],
      ['DELETE', `/v1/generations/${made.generation}`, undefined],
      ['POST', `/v1/batches/${made.batch}/cancel`, undefined],
    ];
    for (const [method, path, body] of writes) {
      const r = await api(stack, method, path, body, reader.auth);
      expect({ method, path, status: r.status }).toEqual({ method, path, status: 403 });
    }
    // Nothing was created or changed.
    expect(await listAll('/v1/generations', reader)).toEqual([]);
    expect((await api(stack, 'GET', `/v1/generations/${made.generation}`, undefined, alice.auth)).json.status).toBe('succeeded');

    for (const path of ['/v1/generations', '/v1/sandbox-runs', '/v1/batches', '/v1/generations?status=succeeded&engine=flux1_dev']) {
      const r = await api(stack, 'GET', path, undefined, reader.auth);
      expect(r.status).toBe(200);
      expect(r.json.items).toEqual([]);
    }
    expect((await api(stack, 'GET', '/v1/engines', undefined, reader.auth)).status).toBe(200);
    // Read-only is not read-all: others' work stays invisible.
    expect((await api(stack, 'GET', `/v1/generations/${made.generation}`, undefined, reader.auth)).status).toBe(404);
    expect((await api(stack, 'GET', `/v1/sandbox-runs/${made.sandboxRun}`, undefined, reader.auth)).status).toBe(404);
    expect((await api(stack, 'GET', `/v1/batches/${made.batch}`, undefined, reader.auth)).status).toBe(404);
  });

  it('an admin key sees every owner’s work and reads all of it', async () => {
    const generations = await listAll('/v1/generations', admin);
    expect(generations).toEqual(expect.arrayContaining([made.generation, made.generate, ...made.batchItems, made.bobs]));
    expect(await listAll('/v1/generations', admin, '&status=succeeded&engine=flux1_dev')).toEqual(expect.arrayContaining([made.generation, made.bobs]));
    expect(await listAll('/v1/sandbox-runs', admin)).toEqual(expect.arrayContaining([made.nerdSandbox, made.sandboxRun]));
    expect(await listAll('/v1/batches', admin)).toEqual(expect.arrayContaining([made.batch]));

    expect((await api(stack, 'GET', `/v1/generations/${made.generation}`, undefined, admin.auth)).status).toBe(200);
    for (const format of FORMATS) expect((await api(stack, 'GET', `/v1/generations/${made.bobs}/image?format=${format}`, undefined, admin.auth)).status).toBe(200);
    const events = await readSse(`${stack.url}/v1/generations/${made.generation}/events`, { headers: admin.auth, until: (m) => TERMINAL.includes(m.event), timeoutMs: 10_000 });
    expect(events.messages[events.messages.length - 1].event).toBe('succeeded');
    const runEvents = await readSse(`${stack.url}/v1/sandbox-runs/${made.nerdSandbox}/events`, { headers: admin.auth, until: (m) => m.event === 'done', timeoutMs: 10_000 });
    expect(runEvents.messages[runEvents.messages.length - 1].event).toBe('done');
    expect((await api(stack, 'GET', `/v1/sandbox-runs/${made.sandboxRun}`, undefined, admin.auth)).status).toBe(200);
    expect((await api(stack, 'GET', `/v1/batches/${made.batch}`, undefined, admin.auth)).json.counts.succeeded).toBe(2);

    // An admin deletes another owner's finished generation: gone for its owner too.
    expect((await api(stack, 'DELETE', `/v1/generations/${made.generate}`, undefined, admin.auth)).status).toBe(204);
    expect((await api(stack, 'GET', `/v1/generations/${made.generate}`, undefined, alice.auth)).status).toBe(404);
    expect((await api(stack, 'GET', `/v1/generations/${made.generate}/image`, undefined, alice.auth)).status).toBe(404);
    expect(await listAll('/v1/generations', alice)).not.toContain(made.generate);
  });

  it("cancelling another owner's work: 404 for a user, 403 for read-only, done by an admin", async () => {
    const long = await api(stack, 'POST', '/v1/generations', { prompt: 'alice long', seed: 7, ...LONG }, alice.auth);
    expect(long.status).toBe(202);
    const batch = await api(stack, 'POST', '/v1/batches', { prompts: ['alice long a', 'alice long b'], engines: ['flux1_dev'], steps: LONG.steps, width: LONG.width, height: LONG.height }, alice.auth);
    expect(batch.status).toBe(202);

    expect((await api(stack, 'POST', `/v1/generations/${long.json.id}/cancel`, undefined, bob.auth)).status).toBe(404);
    expect((await api(stack, 'DELETE', `/v1/generations/${long.json.id}`, undefined, bob.auth)).status).toBe(404);
    expect((await api(stack, 'POST', `/v1/batches/${batch.json.id}/cancel`, undefined, bob.auth)).status).toBe(404);
    expect((await api(stack, 'POST', `/v1/generations/${long.json.id}/cancel`, undefined, reader.auth)).status).toBe(403);
    expect((await api(stack, 'POST', `/v1/batches/${batch.json.id}/cancel`, undefined, reader.auth)).status).toBe(403);
    expect(['queued', 'running']).toContain((await api(stack, 'GET', `/v1/generations/${long.json.id}`, undefined, alice.auth)).json.status);

    const cancel = await api(stack, 'POST', `/v1/generations/${long.json.id}/cancel`, undefined, admin.auth);
    expect(cancel.status).toBe(202);
    expect(['cancelled', 'cancelling']).toContain(cancel.json.status);
    const cancelBatch = await api(stack, 'POST', `/v1/batches/${batch.json.id}/cancel`, undefined, admin.auth);
    expect(cancelBatch.status).toBe(202);
    await until(`/v1/generations/${long.json.id}`, alice, (g) => g.status === 'cancelled');
    const ended = await until(`/v1/batches/${batch.json.id}`, alice, (b) => b.counts.queued + b.counts.running === 0);
    expect(ended.status).toBe('cancelled');
    expect(ended.counts.cancelled).toBe(2);
  });

  it('an Idempotency-Key belongs to its owner: the same key and body from another user makes a new generation', async () => {
    const body = { prompt: 'same request', engine: 'flux1_dev', seed: 8, ...SMALL };
    const headers = { 'idempotency-key': 'shared-key-1' };
    const first = await api(stack, 'POST', '/v1/generations', body, { ...alice.auth, ...headers });
    const other = await api(stack, 'POST', '/v1/generations', body, { ...bob.auth, ...headers });
    expect(first.status).toBe(202);
    expect(other.status).toBe(202);
    expect(other.json.id).not.toBe(first.json.id);
    expect(other.headers.get('idempotent-replayed')).toBeNull();
    const again = await api(stack, 'POST', '/v1/generations', body, { ...alice.auth, ...headers });
    expect(again.json.id).toBe(first.json.id);
    await until(`/v1/generations/${first.json.id}`, alice, (g) => TERMINAL.includes(g.status));
    await until(`/v1/generations/${other.json.id}`, bob, (g) => TERMINAL.includes(g.status));
  });
});

describe('open mode on loopback: the anonymous owner', () => {
  // No supervisor: what is created stays queued, which is all ownership needs.
  let open: Stack;
  let user: TestKey;
  let openAdmin: TestKey;
  const anonymous = { generation: '', sandboxRun: '', batch: '' };

  beforeAll(async () => {
    open = await startStack({ supervisors: 0 });
    ({ user, openAdmin } = await createKeys(open, { user: {}, openAdmin: { role: 'admin' } }));
    anonymous.generation = (await api(open, 'POST', '/v1/generations', { prompt: 'anonymous', engine: 'flux1_dev', ...SMALL })).json.id;
    anonymous.sandboxRun = (await api(open, 'POST', '/v1/sandbox-runs', { prompt: 'anonymous run', ...SMALL, engines: ['realvis_xl'] })).json.id;
    anonymous.batch = (await api(open, 'POST', '/v1/batches', { prompts: ['anonymous batch'], engines: ['flux1_dev'], ...SMALL })).json.id;
  });
  afterAll(async () => {
    await open?.stop();
  });

  const as = (who: TestKey | null) => who?.auth ?? {};

  it('anonymous work is the anonymous owner’s: a key gets 404 for it and never lists it', async () => {
    expect(anonymous.generation).toMatch(/^gen_/);
    expect(anonymous.sandboxRun).toMatch(/^sbx_/);
    expect(anonymous.batch).toMatch(/^bat_/);
    expect((await api(open, 'GET', `/v1/generations/${anonymous.generation}`)).status).toBe(200);
    expect((await api(open, 'GET', `/v1/sandbox-runs/${anonymous.sandboxRun}`)).status).toBe(200);
    expect((await api(open, 'GET', `/v1/batches/${anonymous.batch}`)).status).toBe(200);
    const anonList = (await api(open, 'GET', '/v1/generations?limit=100')).json;
    expect(ids(anonList)).toContain(anonymous.generation);

    expect((await api(open, 'GET', `/v1/generations/${anonymous.generation}`, undefined, as(user))).status).toBe(404);
    expect((await api(open, 'GET', `/v1/generations/${anonymous.generation}/events`, undefined, as(user))).status).toBe(404);
    expect((await api(open, 'POST', `/v1/generations/${anonymous.generation}/cancel`, undefined, as(user))).status).toBe(404);
    expect((await api(open, 'DELETE', `/v1/generations/${anonymous.generation}`, undefined, as(user))).status).toBe(404);
    expect((await api(open, 'GET', `/v1/sandbox-runs/${anonymous.sandboxRun}`, undefined, as(user))).status).toBe(404);
    expect((await api(open, 'GET', `/v1/sandbox-runs/${anonymous.sandboxRun}/events`, undefined, as(user))).status).toBe(404);
    expect((await api(open, 'GET', `/v1/batches/${anonymous.batch}`, undefined, as(user))).status).toBe(404);
    expect((await api(open, 'POST', `/v1/batches/${anonymous.batch}/cancel`, undefined, as(user))).status).toBe(404);
    for (const path of ['/v1/generations', '/v1/sandbox-runs', '/v1/batches']) {
      expect((await api(open, 'GET', path, undefined, as(user))).json.items).toEqual([]);
    }
  });

  it('a key’s work is invisible to anonymous callers; an admin key sees both', async () => {
    const keyed = await api(open, 'POST', '/v1/generations', { prompt: 'keyed', engine: 'flux1_dev', ...SMALL }, as(user));
    expect(keyed.status).toBe(202);
    expect((await api(open, 'GET', `/v1/generations/${keyed.json.id}`)).status).toBe(404);
    expect(ids((await api(open, 'GET', '/v1/generations?limit=100')).json)).not.toContain(keyed.json.id);
    expect(ids((await api(open, 'GET', '/v1/generations?limit=100', undefined, as(user))).json)).toEqual([keyed.json.id]);

    const all = ids((await api(open, 'GET', '/v1/generations?limit=100', undefined, as(openAdmin))).json);
    expect(all).toEqual(expect.arrayContaining([anonymous.generation, keyed.json.id]));
    expect((await api(open, 'GET', `/v1/generations/${anonymous.generation}`, undefined, as(openAdmin))).status).toBe(200);
    expect((await api(open, 'GET', `/v1/sandbox-runs/${anonymous.sandboxRun}`, undefined, as(openAdmin))).status).toBe(200);
  });
});
