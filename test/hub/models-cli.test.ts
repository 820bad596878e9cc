/**
 * The models CLI as a separate process against a fake hub on 127.0.0.1: full pulls, resume after an
 * interruption, corruption caught, gated repos explained, pinned revisions honoured.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { ENGINE_CATALOG, ENGINE_IDS } from '@flexy/engines';
import { FakeHub, gitBlobSha1, seedCatalogRepos, sha256 } from './fake-hub';
import { CLI, ROOT, buildCli, cliEnv, fileSha256, runCli, startCli, tempModelsDir, waitFor } from './harness';

jest.setTimeout(60_000);

const FLUX1 = ENGINE_CATALOG.flux1_dev;
const REALVIS = ENGINE_CATALOG.realvis_xl;
const FLUX1_SHARD = 'transformer/diffusion_pytorch_model-00001-of-00002.safetensors';

// What each pipeline needs from the seeded repos, written out by hand as the oracle.
const FLUX1_FILES = [
  'model_index.json',
  'scheduler/scheduler_config.json',
  'text_encoder/config.json',
  'text_encoder/model.safetensors',
  'tokenizer/merges.txt',
  'tokenizer/vocab.json',
  'tokenizer_2/spiece.model',
  'tokenizer_2/tokenizer_config.json',
  'transformer/config.json',
  'transformer/diffusion_pytorch_model-00001-of-00002.safetensors',
  'transformer/diffusion_pytorch_model-00002-of-00002.safetensors',
  'transformer/diffusion_pytorch_model.safetensors.index.json',
  'vae/config.json',
  'vae/diffusion_pytorch_model.safetensors',
];
const REALVIS_FILES = [
  'model_index.json',
  'scheduler/scheduler_config.json',
  'text_encoder/config.json',
  'text_encoder/model.fp16.safetensors',
  'tokenizer/merges.txt',
  'tokenizer/vocab.json',
  'unet/config.json',
  'unet/diffusion_pytorch_model.fp16.safetensors',
  'vae/config.json',
  'vae/diffusion_pytorch_model.fp16.safetensors',
];

let hub: FakeHub;
let commits: Record<string, string>;

function filesUnder(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...filesUnder(dir, rel));
    else out.push(rel);
  }
  return out.sort();
}

function manifestOf(modelsDir: string, engine: string) {
  return JSON.parse(readFileSync(join(modelsDir, engine, 'flexyface-manifest.json'), 'utf8'));
}

function envFor(modelsDir: string, extra: Record<string, string | undefined> = {}) {
  return cliEnv({ HF_ENDPOINT: hub.hubUrl, MODELS_DIR: modelsDir, HF_TOKEN: 'hf_accepted', ...extra });
}

async function listJson(modelsDir: string) {
  const run = await runCli(['list', '--json'], envFor(modelsDir));
  expect(run.code).toBe(0);
  const data = JSON.parse(run.stdout) as { engines: Array<{ engine: string; state: string; revision?: string; bytes?: number; fixCommand: string; detail: string }> };
  return Object.fromEntries(data.engines.map((e) => [e.engine, e]));
}

beforeAll(async () => {
  buildCli();
  hub = await new FakeHub().start();
  hub.tokens.set('hf_accepted', new Set(ENGINE_IDS.map((id) => ENGINE_CATALOG[id].hubRepo)));
  hub.tokens.set('hf_pending', new Set());
  commits = seedCatalogRepos(hub, ENGINE_IDS.map((id) => ENGINE_CATALOG[id]));
});

afterAll(async () => {
  await hub?.stop();
});

beforeEach(() => {
  hub.requests.length = 0;
  hub.faults.clear();
  hub.onResolve = undefined;
  for (const id of ENGINE_IDS) hub.moveBranch(ENGINE_CATALOG[id].hubRepo, 'main', commits[id]);
});

describe('list', () => {
  it('names every engine with its repo, pinned revision, size and state, and shows demo snapshots as demo', async () => {
    const modelsDir = tempModelsDir();
    mkdirSync(join(modelsDir, 'sd3_medium'));
    writeFileSync(join(modelsDir, 'sd3_medium', 'flexyface-demo.json'), JSON.stringify({ weights: 'demo' }));
    writeFileSync(join(modelsDir, 'sd3_medium', 'model_index.json'), '{}');

    const run = await runCli(['list'], envFor(modelsDir));
    expect(run.code).toBe(0);
    for (const id of ENGINE_IDS) {
      const row = run.stdout.split('\n').find((l) => l.startsWith(id + ' '));
      expect(row).toContain(ENGINE_CATALOG[id].hubRepo);
      expect(row).toContain(ENGINE_CATALOG[id].revision.slice(0, 12));
    }
    expect(run.stdout).toMatch(/^sd3_medium .*demo$/m);
    expect(run.stdout).toMatch(/^flux1_dev .*missing$/m);
    expect(run.stdout).toContain('fix: npm run models -- pull flux1_dev');
    // list is offline: it never asks the hub.
    expect(hub.requests).toHaveLength(0);

    const remote = await runCli(['list', '--remote', '--json'], envFor(modelsDir));
    const flux1 = JSON.parse(remote.stdout).engines.find((e: { engine: string }) => e.engine === 'flux1_dev');
    const expectedBytes = FLUX1_FILES.reduce((s, p) => s + hub.file(FLUX1.hubRepo, 'main', p)!.content.length, 0);
    expect(flux1.remote).toEqual({ revision: commits.flux1_dev, bytes: expectedBytes });
  });
});

describe('pull', () => {
  it('downloads exactly the files the pipeline needs, checks each, and writes the manifest', async () => {
    const modelsDir = tempModelsDir();
    const run = await runCli(['pull', 'realvis_xl'], envFor(modelsDir));
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);

    const dir = join(modelsDir, 'realvis_xl');
    expect(filesUnder(dir)).toEqual([...REALVIS_FILES, 'flexyface-manifest.json'].sort());
    const manifest = manifestOf(modelsDir, 'realvis_xl');
    expect(manifest).toMatchObject({ weights: 'hub', engine: 'realvis_xl', repo: REALVIS.hubRepo, revision: commits.realvis_xl });
    expect(Date.parse(manifest.pulledAt)).toBeGreaterThan(Date.now() - 60_000);
    for (const path of REALVIS_FILES) {
      const content = hub.file(REALVIS.hubRepo, commits.realvis_xl, path)!.content;
      const entry = manifest.files.find((f: { path: string }) => f.path === path);
      expect(entry).toEqual({ path, size: content.length, sha256: sha256(content) });
      expect(fileSha256(join(dir, path))).toBe(sha256(content));
    }
    // Files outside the allow patterns were never fetched.
    const fetched = hub.requests.filter((r) => r.path.includes('/resolve/')).map((r) => r.path);
    expect(fetched.some((p) => p.includes('RealVisXL_V5.0_fp16') || p.endsWith('unet/diffusion_pytorch_model.safetensors'))).toBe(false);
    // The token goes to the hub, never to the CDN on another origin.
    expect(hub.requests.filter((r) => r.server === 'hub' && r.path.includes('/resolve/')).every((r) => r.authorization === 'Bearer hf_accepted')).toBe(true);
    expect(hub.cdnGets().length).toBeGreaterThan(0);
    expect(hub.cdnGets().every((r) => r.authorization === undefined)).toBe(true);
    // Not a terminal: plain lines, no cursor movement.
    expect(run.stdout).not.toContain('\x1b[');
    expect(run.stdout).toContain('realvis_xl: done unet/diffusion_pytorch_model.fp16.safetensors');
    expect(run.stdout).toMatch(/realvis_xl: verified snapshot at [0-9a-f]{40}/);

    const states = await listJson(modelsDir);
    expect(states.realvis_xl).toMatchObject({ state: 'verified', revision: commits.realvis_xl, bytes: manifest.files.reduce((s: number, f: { size: number }) => s + f.size, 0) });
  });

  it('leaves a verified snapshot alone unless --force, which re-checks it without downloading again', async () => {
    const modelsDir = tempModelsDir();
    expect((await runCli(['pull', 'realvis_xl'], envFor(modelsDir))).code).toBe(0);
    const before = manifestOf(modelsDir, 'realvis_xl');
    hub.requests.length = 0;

    const again = await runCli(['pull', 'realvis_xl'], envFor(modelsDir));
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('realvis_xl: already verified');
    expect(hub.requests).toHaveLength(0);
    expect(manifestOf(modelsDir, 'realvis_xl').pulledAt).toBe(before.pulledAt);

    const forced = await runCli(['pull', 'realvis_xl', '--force'], envFor(modelsDir));
    expect(forced.code).toBe(0);
    expect(forced.stdout).toContain(`(0 downloaded, 0 resumed, ${REALVIS_FILES.length} kept`);
    expect(hub.cdnGets().filter((r) => r.range !== 'bytes=0-0')).toHaveLength(0);
  });

  it('pulls every engine with --all, stating the licences, FLUX.2-dev non-commercial in plain words', async () => {
    const modelsDir = tempModelsDir();
    const run = await runCli(['pull', '--all', '--jobs', '4'], envFor(modelsDir));
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('FLUX.2 [dev] is NOT licensed for commercial use');
    expect(run.stdout).toContain('needs a separate commercial licence from');
    expect(run.stdout).toContain(`${ENGINE_CATALOG.flux2_dev_4bit.hubRepo} is gated`);
    const states = await listJson(modelsDir);
    for (const id of ENGINE_IDS) {
      expect(states[id].state).toBe('verified');
      expect(states[id].revision).toBe(commits[id]);
    }
    expect(manifestOf(modelsDir, 'flux2_dev_4bit').files.map((f: { path: string }) => f.path)).toEqual(
      expect.arrayContaining(['processor/preprocessor_config.json', 'text_encoder/generation_config.json']),
    );
  });

  it('says so plainly when the hub does not answer', async () => {
    const modelsDir = tempModelsDir();
    // A port that was just free: nothing listens there.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const run = await runCli(['pull', 'realvis_xl'], envFor(modelsDir, { HF_ENDPOINT: `http://127.0.0.1:${port}` }));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`realvis_xl: Cannot reach the hub at http://127.0.0.1:${port} (ECONNREFUSED)`);
    expect(existsSync(join(modelsDir, 'realvis_xl'))).toBe(false);
  });

  it('refuses to run where the hub is off limits (HF_HUB_OFFLINE=1)', async () => {
    const modelsDir = tempModelsDir();
    const run = await runCli(['pull', 'realvis_xl'], envFor(modelsDir, { HF_HUB_OFFLINE: '1' }));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('HF_HUB_OFFLINE is set');
    expect(hub.requests).toHaveLength(0);
    expect(existsSync(join(modelsDir, 'realvis_xl'))).toBe(false);
  });
});

describe('gated repositories', () => {
  it('explains a missing token (401): accept the licence, create a token, set HF_TOKEN', async () => {
    const modelsDir = tempModelsDir();
    const run = await runCli(['pull', 'flux1_dev'], envFor(modelsDir, { HF_TOKEN: undefined }));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('black-forest-labs/FLUX.1-dev is gated');
    expect(run.stderr).toContain('HF_TOKEN is not set (401)');
    expect(run.stderr).toContain(`${hub.hubUrl}/black-forest-labs/FLUX.1-dev`);
    expect(run.stderr).toContain('accept it');
    expect(run.stderr).toContain(`${hub.hubUrl}/settings/tokens`);
    expect(existsSync(join(modelsDir, 'flux1_dev'))).toBe(false);
  });

  it('explains a token whose account has not accepted the licence (403)', async () => {
    const modelsDir = tempModelsDir();
    const run = await runCli(['pull', 'flux2_dev_4bit'], envFor(modelsDir, { HF_TOKEN: 'hf_pending' }));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('the account behind HF_TOKEN has no access yet (403)');
    expect(run.stderr).toContain('not in the authorized list');
    expect(run.stderr).toContain('Read access to contents of all public gated repos');
    // The licence is stated before any attempt.
    expect(run.stdout).toContain('FLUX.2 [dev] is NOT licensed for commercial use');
    expect(existsSync(join(modelsDir, 'flux2_dev_4bit'))).toBe(false);
  });

  it('reads the token from the file HF_TOKEN_PATH names (a Docker secret) and pulls the gated repo', async () => {
    const modelsDir = tempModelsDir();
    const secret = join(modelsDir, 'hf_token');
    writeFileSync(secret, 'hf_accepted\n');
    const run = await runCli(['pull', 'flux1_dev'], envFor(modelsDir, { HF_TOKEN: undefined, HF_TOKEN_PATH: secret }));
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(manifestOf(modelsDir, 'flux1_dev').revision).toBe(commits.flux1_dev);
    expect(hub.requests.filter((r) => r.path.includes('/resolve/')).every((r) => r.authorization === 'Bearer hf_accepted')).toBe(true);
  });

  it('explains a token the hub does not know', async () => {
    const modelsDir = tempModelsDir();
    const run = await runCli(['pull', 'realvis_xl'], envFor(modelsDir, { HF_TOKEN: 'hf_revoked' }));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('The hub refused HF_TOKEN');
  });
});

describe('interrupted downloads', () => {
  it('resumes a pull killed mid-file from where it stopped, with a Range request', async () => {
    const modelsDir = tempModelsDir();
    const shard = hub.file(FLUX1.hubRepo, 'main', FLUX1_SHARD)!.content;
    const oid = sha256(shard);
    const cut = 1_250_000;
    hub.faults.set(oid, { stallAfter: cut });

    const first = startCli(['pull', 'flux1_dev', '--jobs', '1'], envFor(modelsDir));
    const partial = join(modelsDir, 'flux1_dev', '.flexyface-incomplete', `${oid}.partial`);
    await waitFor(() => existsSync(partial) && statSync(partial).size === cut, 20_000, 'the partial file to hold the first bytes');
    first.child.kill('SIGKILL');
    const killed = await first.done;
    expect(killed.signal).toBe('SIGKILL');
    hub.releaseStalls();

    const states = await listJson(modelsDir);
    expect(states.flux1_dev.state).toBe('partial');
    expect(states.flux1_dev.fixCommand).toBe('npm run models -- pull flux1_dev');
    hub.requests.length = 0;

    const second = await runCli(['pull', 'flux1_dev'], envFor(modelsDir));
    expect(second.stderr).toBe('');
    expect(second.code).toBe(0);
    expect(second.stdout).toContain(`resume ${FLUX1_SHARD} at 1.3 MB`);
    const shardGets = hub.cdnGets(oid).filter((r) => r.range !== 'bytes=0-0');
    expect(shardGets).toHaveLength(1);
    expect(shardGets[0].range).toBe(`bytes=${cut}-${shard.length - 1}`);
    expect(shardGets[0].sent).toBe(shard.length - cut);
    expect(fileSha256(join(modelsDir, 'flux1_dev', FLUX1_SHARD))).toBe(oid);
    expect(existsSync(join(modelsDir, 'flux1_dev', '.flexyface-incomplete'))).toBe(false);
    expect(manifestOf(modelsDir, 'flux1_dev').files.map((f: { path: string }) => f.path)).toEqual(FLUX1_FILES);
  });

  it('retries a dropped connection within the same run, continuing from the bytes it has', async () => {
    const modelsDir = tempModelsDir();
    const shard = hub.file(FLUX1.hubRepo, 'main', FLUX1_SHARD)!.content;
    const oid = sha256(shard);
    hub.faults.set(oid, { dropAfter: 700_000 });

    const run = await runCli(['pull', 'flux1_dev'], envFor(modelsDir));
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`flux1_dev: retry 1 for ${FLUX1_SHARD}`);
    const gets = hub.cdnGets(oid).filter((r) => r.range !== 'bytes=0-0');
    expect(gets).toHaveLength(2);
    expect(gets[0].range).toBeUndefined();
    // The retry asks for what is missing from the bytes already on disk: how many of the 700,000 sent
    // reached the file before the drop depends on stream buffering, so the start lies in (0, 700000].
    const [, start, end] = /^bytes=(\d+)-(\d+)$/.exec(gets[1].range!)!.map(Number);
    expect(start).toBeGreaterThan(0);
    expect(start).toBeLessThanOrEqual(700_000);
    expect(end).toBe(shard.length - 1);
    expect(fileSha256(join(modelsDir, 'flux1_dev', FLUX1_SHARD))).toBe(oid);
  });

  it('aborts a download that stalls and resumes it', async () => {
    const modelsDir = tempModelsDir();
    const shard = hub.file(FLUX1.hubRepo, 'main', FLUX1_SHARD)!.content;
    const oid = sha256(shard);
    hub.faults.set(oid, { stallAfter: 900_000 });
    const run = await runCli(['pull', 'flux1_dev'], envFor(modelsDir, { FLEXY_HUB_STALL_SECONDS: '0.5' }));
    hub.releaseStalls();
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`flux1_dev: retry 1 for ${FLUX1_SHARD}: no data for 0.5 s`);
    const gets = hub.cdnGets(oid).filter((r) => r.range !== 'bytes=0-0');
    expect(gets.map((r) => r.range)).toEqual([undefined, `bytes=900000-${shard.length - 1}`]);
    expect(fileSha256(join(modelsDir, 'flux1_dev', FLUX1_SHARD))).toBe(oid);
  });

  it('starts a file again when the server answers a resume with the whole file', async () => {
    const modelsDir = tempModelsDir();
    const shard = hub.file(FLUX1.hubRepo, 'main', FLUX1_SHARD)!.content;
    const oid = sha256(shard);
    hub.faults.set(oid, { dropAfter: 500_000 });
    const run1 = startCli(['pull', 'flux1_dev'], envFor(modelsDir));
    // The second body request (the resume) gets a 200 with the full file instead of a 206.
    await waitFor(() => hub.cdnGets(oid).filter((r) => r.range !== 'bytes=0-0').length >= 1, 20_000, 'first shard request');
    hub.faults.set(oid, { ignoreRange: true });
    const run = await run1.done;
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('the server ignored the Range request');
    expect(fileSha256(join(modelsDir, 'flux1_dev', FLUX1_SHARD))).toBe(oid);
  });
});

describe('integrity', () => {
  it('refuses bytes that do not match the sha256 of the listing, and keeps nothing of them', async () => {
    const modelsDir = tempModelsDir();
    const oid = sha256(hub.file(FLUX1.hubRepo, 'main', FLUX1_SHARD)!.content);
    hub.faults.set(oid, { corrupt: true, times: 2 });
    const run = await runCli(['pull', 'flux1_dev'], envFor(modelsDir));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`flux1_dev: ${FLUX1_SHARD} failed its check twice`);
    expect(run.stderr).toContain(`expected ${oid}`);
    expect(existsSync(join(modelsDir, 'flux1_dev', FLUX1_SHARD))).toBe(false);
    expect(existsSync(join(modelsDir, 'flux1_dev', 'flexyface-manifest.json'))).toBe(false);
    expect((await listJson(modelsDir)).flux1_dev.state).toBe('partial');
  });

  it('verify names a truncated file and a file altered in place; pull --force repairs only those', async () => {
    const modelsDir = tempModelsDir();
    expect((await runCli(['pull', 'flux1_dev'], envFor(modelsDir))).code).toBe(0);
    const dir = join(modelsDir, 'flux1_dev');
    const clean = await runCli(['verify', 'flux1_dev'], envFor(modelsDir));
    expect(clean.code).toBe(0);
    expect(clean.stdout).toContain('flux1_dev: verified at');

    // Same size, one byte changed: only a hash finds it.
    const fd = openSync(join(dir, FLUX1_SHARD), 'r+');
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, 1000);
    byte[0] ^= 0xff;
    writeSync(fd, byte, 0, 1, 1000);
    closeSync(fd);
    expect((await listJson(modelsDir)).flux1_dev.state).toBe('verified');
    const altered = await runCli(['verify', 'flux1_dev'], envFor(modelsDir));
    expect(altered.code).toBe(1);
    expect(altered.stdout).toContain(`${FLUX1_SHARD}: altered: sha256`);
    expect(altered.stdout).toContain('fix: npm run models -- pull flux1_dev --force');

    truncateSync(join(dir, 'vae/diffusion_pytorch_model.safetensors'), 1000);
    const states = await listJson(modelsDir);
    expect(states.flux1_dev.state).toBe('altered');
    expect(states.flux1_dev.detail).toContain('vae/diffusion_pytorch_model.safetensors has 1000 bytes');
    const truncated = await runCli(['verify'], envFor(modelsDir));
    expect(truncated.code).toBe(1);
    expect(truncated.stdout).toContain('vae/diffusion_pytorch_model.safetensors: truncated or resized: 1000 bytes');
    expect(truncated.stdout).toContain('realvis_xl: missing (not pulled); skipped');

    hub.requests.length = 0;
    const repair = await runCli(['pull', 'flux1_dev', '--force'], envFor(modelsDir));
    expect(repair.code).toBe(0);
    expect(repair.stdout).toContain(`(2 downloaded, 0 resumed, ${FLUX1_FILES.length - 2} kept`);
    const bodies = hub.cdnGets().filter((r) => r.range !== 'bytes=0-0');
    expect(bodies).toHaveLength(2);
    expect((await runCli(['verify', 'flux1_dev'], envFor(modelsDir))).code).toBe(0);
  });
});

describe('pinned revisions', () => {
  it('keeps to the commit the branch named when the pull began, even when the branch moves during it', async () => {
    const modelsDir = tempModelsDir();
    const a = commits.flux1_dev;
    const b = hub.commit(FLUX1.hubRepo, { [FLUX1_SHARD]: Buffer.alloc(2_000_000, 7), 'vae/config.json': '{"moved":true}' }, { base: a });
    hub.moveBranch(FLUX1.hubRepo, 'main', a);
    let moved = false;
    hub.onResolve = (repo) => {
      if (!moved && repo === FLUX1.hubRepo) {
        moved = true;
        hub.moveBranch(FLUX1.hubRepo, 'main', b);
      }
    };
    const run = await runCli(['pull', 'flux1_dev'], envFor(modelsDir));
    expect(run.code).toBe(0);
    expect(moved).toBe(true);
    expect(manifestOf(modelsDir, 'flux1_dev').revision).toBe(a);
    expect(fileSha256(join(modelsDir, 'flux1_dev', FLUX1_SHARD))).toBe(sha256(hub.file(FLUX1.hubRepo, a, FLUX1_SHARD)!.content));
    expect(readFileSync(join(modelsDir, 'flux1_dev', 'vae/config.json'), 'utf8')).not.toContain('moved');
    // Every file was asked for by commit, never by branch name.
    const resolves = hub.requests.filter((r) => r.path.includes('/resolve/'));
    expect(resolves.length).toBeGreaterThan(0);
    expect(resolves.every((r) => r.path.includes(`/resolve/${a}/`))).toBe(true);
  });

  it('pulls a given 40-hex revision exactly while the branch points elsewhere, and moves to the branch head only when asked', async () => {
    const modelsDir = tempModelsDir();
    const a = commits.realvis_xl;
    const b = hub.commit(REALVIS.hubRepo, { 'unet/config.json': '{"v":2}', 'text_encoder/model.fp16.safetensors': null }, { base: a });
    expect(hub.file(REALVIS.hubRepo, 'main', 'unet/config.json')!.content.toString()).toBe('{"v":2}');

    const pinned = await runCli(['pull', 'realvis_xl', '--revision', a], envFor(modelsDir));
    expect(pinned.code).toBe(0);
    const dir = join(modelsDir, 'realvis_xl');
    expect(manifestOf(modelsDir, 'realvis_xl').revision).toBe(a);
    expect(readFileSync(join(dir, 'unet/config.json'))).toEqual(hub.file(REALVIS.hubRepo, a, 'unet/config.json')!.content);

    // Verified at a: a plain pull does not follow the branch.
    const plain = await runCli(['pull', 'realvis_xl'], envFor(modelsDir));
    expect(plain.stdout).toContain('already verified');
    expect(manifestOf(modelsDir, 'realvis_xl').revision).toBe(a);

    // Following the branch is asked for explicitly, whatever the catalog pins.
    const moved = await runCli(['pull', 'realvis_xl', '--revision', 'main', '--force'], envFor(modelsDir));
    expect(moved.code).toBe(0);
    const manifest = manifestOf(modelsDir, 'realvis_xl');
    expect(manifest.revision).toBe(b);
    expect(readFileSync(join(dir, 'unet/config.json'), 'utf8')).toBe('{"v":2}');
    // A file the new commit no longer has is gone with the old manifest.
    expect(existsSync(join(dir, 'text_encoder/model.fp16.safetensors'))).toBe(false);
    expect(manifest.files.map((f: { path: string }) => f.path)).not.toContain('text_encoder/model.fp16.safetensors');
  });

  it('reports an unknown revision as not found', async () => {
    const modelsDir = tempModelsDir();
    const run = await runCli(['pull', 'realvis_xl', '--revision', 'f'.repeat(40)], envFor(modelsDir));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`revision ${'f'.repeat(40)} of SG161222/RealVisXL_V5.0 does not exist`);
  });
});

describe('terminal output', () => {
  it('draws progress bars with bytes, rate and ETA on a terminal', async () => {
    const modelsDir = tempModelsDir();
    const oid = sha256(hub.file(REALVIS.hubRepo, 'main', 'unet/diffusion_pytorch_model.fp16.safetensors')!.content);
    expect(oid).toMatch(/^[0-9a-f]{64}$/);
    const env = envFor(modelsDir);
    // `script` gives the CLI a pseudo-terminal, as an operator's shell would.
    const child = spawn('script', ['-qec', `${process.execPath} ${CLI} pull realvis_xl`, '/dev/null'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const code = await new Promise((r) => child.on('close', r));
    expect(code).toBe(0);
    expect(out).toContain('\x1b[');
    expect(out).toMatch(/realvis_xl \[[#-]{20}\] +\d+% [\d.]+ [kMG]?B\/[\d.]+ MB [\d.]+ [kMG]?B\/s ETA \d\d:\d\d\r?\n/);
    expect(out).toContain('realvis_xl: verified snapshot at');
  });
});

describe('git-stored files', () => {
  it('checks small files against their git blob sha1 and refuses altered ones', async () => {
    const modelsDir = tempModelsDir();
    const content = hub.file(REALVIS.hubRepo, 'main', 'model_index.json')!.content;
    hub.faults.set(gitBlobSha1(content), { corrupt: true, times: 2 });
    const run = await runCli(['pull', 'realvis_xl'], envFor(modelsDir));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`model_index.json failed its check twice (git sha1`);
    expect(existsSync(join(modelsDir, 'realvis_xl', 'model_index.json'))).toBe(false);

    const retry = await runCli(['pull', 'realvis_xl'], envFor(modelsDir));
    expect(retry.code).toBe(0);
    const entry = manifestOf(modelsDir, 'realvis_xl').files.find((f: { path: string }) => f.path === 'model_index.json');
    expect(entry).toEqual({ path: 'model_index.json', size: content.length, sha256: sha256(content) });
  });
});
