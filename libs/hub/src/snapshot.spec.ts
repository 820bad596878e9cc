import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ENGINE_CATALOG, type EngineSpec } from '@flexy/engines';
import { snapshotState, verifySnapshot } from './snapshot';

// A branch in the catalog accepts the snapshot's commit, whatever the catalog pins today.
const spec: EngineSpec = { ...ENGINE_CATALOG.realvis_xl, revision: 'main' };
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const COMMIT = 'a'.repeat(40);

let modelsDir: string;
let dir: string;

beforeEach(() => {
  modelsDir = mkdtempSync(join(tmpdir(), 'flexy-snap-'));
  dir = join(modelsDir, spec.localDir);
});
afterEach(() => rmSync(modelsDir, { recursive: true, force: true }));

function writeSnapshot(files: Record<string, string>, manifest: Partial<Record<string, unknown>> = {}) {
  mkdirSync(dir, { recursive: true });
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  writeFileSync(
    join(dir, 'flexyface-manifest.json'),
    JSON.stringify({
      weights: 'hub',
      engine: spec.id,
      repo: spec.hubRepo,
      revision: COMMIT,
      files: Object.entries(files).map(([path, c]) => ({ path, size: Buffer.byteLength(c), sha256: sha(c) })),
      pulledAt: new Date().toISOString(),
      ...manifest,
    }),
  );
}

describe('snapshotState', () => {
  it('is missing when the folder is absent or empty, with the pull command as the fix', () => {
    expect(snapshotState(spec, modelsDir)).toMatchObject({ state: 'missing', fixCommand: expect.stringMatching(/^npm run models -- pull realvis_xl/) });
    mkdirSync(dir);
    expect(snapshotState(spec, modelsDir).state).toBe('missing');
  });

  it('is verified when every manifest file has its size, with the revision and total bytes', () => {
    writeSnapshot({ 'model_index.json': '{}', 'unet/w.fp16.safetensors': 'weights' });
    expect(snapshotState(spec, modelsDir)).toMatchObject({ state: 'verified', revision: COMMIT, bytes: 9 });
  });

  it('is altered when a file is missing or has another size, naming it', () => {
    writeSnapshot({ 'model_index.json': '{}', 'unet/w.fp16.safetensors': 'weights' });
    truncateSync(join(dir, 'unet/w.fp16.safetensors'), 3);
    const state = snapshotState(spec, modelsDir);
    expect(state.state).toBe('altered');
    expect(state.problems).toEqual([{ path: 'unet/w.fp16.safetensors', problem: 'size', expected: 7, actual: 3 }]);
    expect(state.fixCommand).toMatch(/pull realvis_xl --force/);
    rmSync(join(dir, 'model_index.json'));
    expect(snapshotState(spec, modelsDir).detail).toContain('model_index.json is missing');
  });

  it('is altered when the catalog pins another commit than the snapshot holds', () => {
    writeSnapshot({ 'model_index.json': '{}' });
    const pinned: EngineSpec = { ...spec, revision: 'b'.repeat(40) };
    expect(snapshotState(pinned, modelsDir)).toMatchObject({ state: 'altered', detail: expect.stringContaining('the catalog pins bbbbbbbbbbbb') });
    expect(snapshotState({ ...spec, revision: COMMIT }, modelsDir).state).toBe('verified');
  });

  it('is demo for a demo snapshot, and partial for files without a manifest', () => {
    mkdirSync(dir);
    writeFileSync(join(dir, 'model_index.json'), '{}');
    expect(snapshotState(spec, modelsDir).state).toBe('partial');
    writeFileSync(join(dir, 'flexyface-demo.json'), JSON.stringify({ weights: 'demo' }));
    expect(snapshotState(spec, modelsDir)).toMatchObject({ state: 'demo', fixCommand: expect.stringContaining('--force') });
  });

  it('is partial when the manifest is unreadable', () => {
    writeSnapshot({ 'model_index.json': '{}' });
    writeFileSync(join(dir, 'flexyface-manifest.json'), '{"weights": "hub", "files": [');
    expect(snapshotState(spec, modelsDir)).toMatchObject({ state: 'partial', detail: expect.stringContaining('unreadable') });
  });

  it('names --models-dir in the fix when the folder is not the default one', () => {
    const previous = process.env.MODELS_DIR;
    process.env.MODELS_DIR = join(modelsDir, 'elsewhere');
    try {
      expect(snapshotState(spec, modelsDir).fixCommand).toBe(`npm run models -- pull realvis_xl --models-dir ${modelsDir}`);
    } finally {
      if (previous === undefined) delete process.env.MODELS_DIR;
      else process.env.MODELS_DIR = previous;
    }
  });
});

describe('verifySnapshot', () => {
  it('finds a file changed in place that the cheap check passes', async () => {
    writeSnapshot({ 'model_index.json': '{}', 'unet/w.fp16.safetensors': 'weights' });
    expect((await verifySnapshot(spec, modelsDir)).state).toBe('verified');
    writeFileSync(join(dir, 'unet/w.fp16.safetensors'), 'WEIGHTS');
    expect(snapshotState(spec, modelsDir).state).toBe('verified');
    const deep = await verifySnapshot(spec, modelsDir);
    expect(deep.state).toBe('altered');
    expect(deep.problems).toEqual([{ path: 'unet/w.fp16.safetensors', problem: 'sha256', expected: sha('weights'), actual: sha('WEIGHTS') }]);
  });
});
