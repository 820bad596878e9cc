/**
 * Pulls an engine's snapshot from the hub into MODELS_DIR/<localDir>:
 * resolve the catalog revision to a commit, list the repo at that commit, keep the files the
 * pipeline needs (allow patterns), download each to a .partial file (resuming with Range),
 * check its size and hash (sha256 = the LFS oid; git blob sha1 for small non-LFS files),
 * rename it into place, and write the manifest last. A missing manifest means "not finished".
 */
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, sep } from 'node:path';
import { downloadFile, fileDownloadInfo, listFiles, modelInfo } from '@huggingface/hub';
import type { EngineSpec } from '@flexy/engines';
import { PullError, explainHubError, type HubResponseNote } from './errors';
import { isAllowed } from './patterns';
import {
  DEMO_MARKER_FILE,
  INCOMPLETE_DIR,
  JOURNAL_FILE,
  MANIFEST_FILE,
  isBuiltSnapshot,
  isCommitSha,
  readJournal,
  readManifest,
  sha256File,
  snapshotDir,
  snapshotState,
  type ManifestFile,
  type PullJournal,
  type SnapshotManifest,
} from './snapshot';

export const DEFAULT_HUB_URL = 'https://huggingface.co';

export interface HubOptions {
  /** Hub endpoint; HF_ENDPOINT or https://huggingface.co. */
  hubUrl?: string;
  /** Access token (HF_TOKEN); needed for gated repositories. */
  token?: string;
}

export interface PullOptions extends HubOptions {
  modelsDir: string;
  /** Re-check and repair a snapshot that is already verified, or replace a demo snapshot. */
  force?: boolean;
  /** Pull this revision instead of the catalog's. */
  revision?: string;
  /** Files downloaded at once. */
  concurrency?: number;
  /** Attempts per file after a network failure, each resuming where the last stopped. */
  retries?: number;
  /** A download that receives nothing for this long is aborted and resumed. */
  stallTimeoutMs?: number;
  /** Use the Xet protocol where the hub offers it (falls back to plain HTTP when false). */
  xet?: boolean;
  reporter?: PullReporter;
}

export interface PlannedFile {
  path: string;
  size: number;
  /** sha256 from the listing (the LFS oid); absent for small files kept in git. */
  sha256?: string;
  /** git blob sha1, for files kept in git. */
  gitOid?: string;
}

export interface RemotePlan {
  repo: string;
  requested: string;
  revision: string;
  files: PlannedFile[];
  totalBytes: number;
}

export type FileOutcome = 'downloaded' | 'resumed' | 'kept';

export interface PullReporter {
  plan?(engine: string, plan: RemotePlan): void;
  fileStart?(engine: string, file: PlannedFile, offset: number): void;
  bytes?(engine: string, file: PlannedFile, n: number): void;
  fileDone?(engine: string, file: PlannedFile, outcome: FileOutcome): void;
  retry?(engine: string, file: PlannedFile, attempt: number, reason: string): void;
  finish?(engine: string): void;
}

export interface PullResult {
  engine: string;
  status: 'pulled' | 'skipped';
  revision: string;
  manifest?: SnapshotManifest;
  downloadedBytes: number;
  outcomes: Record<FileOutcome, number>;
}

export function hubUrlFrom(env: { HF_ENDPOINT?: string } = process.env): string {
  return (env.HF_ENDPOINT || DEFAULT_HUB_URL).replace(/\/+$/, '');
}

/** HF_TOKEN, else the file HF_TOKEN_PATH names (a Docker or compose secret), as the hub's Python client reads them. */
export function tokenFrom(env: { HF_TOKEN?: string; HUGGING_FACE_HUB_TOKEN?: string; HF_TOKEN_PATH?: string } = process.env): string | undefined {
  const direct = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (direct) return direct.trim();
  if (env.HF_TOKEN_PATH && existsSync(env.HF_TOKEN_PATH)) return readFileSync(env.HF_TOKEN_PATH, 'utf8').trim() || undefined;
  return undefined;
}

/** fetch that remembers the hub's error headers, which the client library does not pass on. */
class HubFetch {
  last?: HubResponseNote;

  constructor(private readonly signal?: AbortSignal) {}

  readonly fetch: typeof fetch = async (input, init) => {
    const signal = this.signal && init?.signal ? AbortSignal.any([this.signal, init.signal]) : (this.signal ?? init?.signal);
    const response = await fetch(input, { ...init, signal });
    if (!response.ok) {
      this.last = {
        status: response.status,
        url: response.url,
        errorCode: response.headers.get('x-error-code') ?? undefined,
        errorMessage: response.headers.get('x-error-message') ?? undefined,
      };
    }
    return response;
  };
}

function credentials(token: string | undefined): { accessToken: `hf_${string}` } | Record<string, never> {
  if (!token) return {};
  if (!token.startsWith('hf_')) {
    throw new PullError('HF_TOKEN does not look like a hub access token (it must start with "hf_").', 'usage');
  }
  return { accessToken: token as `hf_${string}` };
}

function safeRelativePath(path: string): boolean {
  if (!path || isAbsolute(path) || path.includes('\\')) return false;
  const parts = normalize(path).split(sep);
  return !parts.includes('..') && parts[0] !== '' && path !== MANIFEST_FILE && path !== DEMO_MARKER_FILE && parts[0] !== INCOMPLETE_DIR;
}

/** Resolves the revision to a commit and lists the files the engine needs at that commit. */
export async function remotePlan(spec: EngineSpec, options: HubOptions & { revision?: string }, hub = new HubFetch()): Promise<RemotePlan> {
  const hubUrl = (options.hubUrl ?? hubUrlFrom()).replace(/\/+$/, '');
  const requested = options.revision ?? spec.revision;
  const cred = credentials(options.token);
  const explain = (error: unknown) =>
    explainHubError(error, spec, { hubUrl, tokenSet: !!options.token, revision: requested, note: hub.last }) ??
    unreachable(error, hubUrl) ??
    error;

  let revision: string;
  try {
    const info = await modelInfo({ name: spec.hubRepo, revision: requested, additionalFields: ['sha'], hubUrl, fetch: hub.fetch, ...cred });
    revision = String(info.sha ?? '');
  } catch (error) {
    throw explain(error);
  }
  if (!isCommitSha(revision)) {
    throw new PullError(`The hub gave no commit for ${spec.hubRepo}@${requested}.`, 'not-found');
  }
  if (isCommitSha(requested) && revision !== requested) {
    throw new PullError(`The hub resolved pinned revision ${requested} of ${spec.hubRepo} to ${revision}.`, 'integrity');
  }

  const files: PlannedFile[] = [];
  try {
    for await (const entry of listFiles({ repo: spec.hubRepo, revision, recursive: true, hubUrl, fetch: hub.fetch, ...cred })) {
      if (entry.type !== 'file' || !isAllowed(entry.path, spec.allowPatterns)) continue;
      if (!safeRelativePath(entry.path)) {
        throw new PullError(`The listing of ${spec.hubRepo}@${revision} holds an unsafe path: ${entry.path}`, 'integrity');
      }
      files.push(
        entry.lfs
          ? { path: entry.path, size: entry.lfs.size, sha256: entry.lfs.oid }
          : { path: entry.path, size: entry.size, gitOid: entry.oid },
      );
    }
  } catch (error) {
    throw explain(error);
  }
  if (files.length === 0) {
    throw new PullError(
      `No file of ${spec.hubRepo}@${revision.slice(0, 12)} matches the catalog's allow patterns (${spec.allowPatterns.join(', ')}).`,
      'not-found',
    );
  }
  files.sort((a, b) => byPath(a.path, b.path));
  return { repo: spec.hubRepo, requested, revision, files, totalBytes: files.reduce((s, f) => s + f.size, 0) };
}

/** Code-point order: the same manifest on every machine, whatever its locale. */
const byPath = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** A hub that does not answer at all (DNS, refused connection, TLS) gets one clear sentence. */
function unreachable(error: unknown, hubUrl: string): PullError | null {
  if (!(error instanceof TypeError) || !/fetch failed/i.test(error.message)) return null;
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return new PullError(
    `Cannot reach the hub at ${hubUrl} (${cause?.code ?? cause?.message ?? error.message}). Check the network, or HF_ENDPOINT.`,
    'network',
  );
}

function gitBlobSha1(content: Buffer): string {
  return createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}

function writeJsonAtomic(path: string, data: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(data, null, 2) + '\n');
  renameSync(tmp, path);
}

function statOrNull(path: string) {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** One pull at a time per engine folder: a second one would interleave writes to the same .partial files. */
function takeLock(incomplete: string, spec: EngineSpec): () => void {
  const lock = join(incomplete, 'pull.lock');
  for (let tries = 0; tries < 2; tries++) {
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx' });
      return () => rmSync(lock, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number(readFileSync(lock, 'utf8'));
      if (holder && holder !== process.pid && pidAlive(holder)) {
        throw new PullError(`Another pull (pid ${holder}) is writing ${spec.id}; wait for it to finish.`, 'refused');
      }
      rmSync(lock, { force: true });
    }
  }
  throw new PullError(`Could not lock ${incomplete}.`, 'refused');
}

class RangeIgnored extends Error {}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function pullEngine(spec: EngineSpec, options: PullOptions): Promise<PullResult> {
  const hubUrl = (options.hubUrl ?? hubUrlFrom()).replace(/\/+$/, '');
  const dir = snapshotDir(spec, options.modelsDir);
  const reporter = options.reporter ?? {};
  const outcomes: Record<FileOutcome, number> = { downloaded: 0, resumed: 0, kept: 0 };

  const current = snapshotState(spec, options.modelsDir, { revision: options.revision });
  if (current.state === 'verified' && !options.force && (!options.revision || isCommitSha(options.revision))) {
    return { engine: spec.id, status: 'skipped', revision: current.revision!, downloadedBytes: 0, outcomes };
  }
  if (isBuiltSnapshot(current.state) && !options.force) {
    throw new PullError(`${dir} holds a ${current.state} snapshot; pass --force to replace it with the hub's weights.`, 'refused');
  }

  const hub = new HubFetch();
  const plan = await remotePlan(spec, { hubUrl, token: options.token, revision: options.revision }, hub);
  const oldManifest = readManifest(dir);
  if (
    current.state === 'verified' &&
    !options.force &&
    oldManifest &&
    oldManifest !== 'invalid' &&
    oldManifest.revision === plan.revision
  ) {
    return { engine: spec.id, status: 'skipped', revision: plan.revision, downloadedBytes: 0, outcomes };
  }
  // One small request before touching the disk, so a gated repo is explained before anything is written.
  try {
    await fileDownloadInfo({ repo: spec.hubRepo, path: plan.files[0].path, revision: plan.revision, hubUrl, fetch: hub.fetch, ...credentials(options.token) });
  } catch (error) {
    throw explainHubError(error, spec, { hubUrl, tokenSet: !!options.token, revision: plan.revision, note: hub.last }) ?? unreachable(error, hubUrl) ?? error;
  }
  reporter.plan?.(spec.id, plan);

  const incomplete = join(dir, INCOMPLETE_DIR);
  mkdirSync(incomplete, { recursive: true });
  const unlock = takeLock(incomplete, spec);
  try {
    if (isBuiltSnapshot(current.state)) {
      for (const entry of readdirSync(dir)) if (entry !== INCOMPLETE_DIR) rmSync(join(dir, entry), { recursive: true, force: true });
    }
    // From here on the folder is not a finished snapshot until the new manifest lands.
    rmSync(join(dir, MANIFEST_FILE), { force: true });

    const journalPath = join(incomplete, JOURNAL_FILE);
    const previous = readJournal(dir);
    const journal: PullJournal =
      previous && previous.repo === spec.hubRepo && previous.revision === plan.revision
        ? { ...previous, totalFiles: plan.files.length, totalBytes: plan.totalBytes }
        : { engine: spec.id, repo: spec.hubRepo, revision: plan.revision, totalFiles: plan.files.length, totalBytes: plan.totalBytes, done: {} };
    writeJsonAtomic(journalPath, journal);
    const trusted = new Map<string, ManifestFile>();
    if (oldManifest && oldManifest !== 'invalid') for (const f of oldManifest.files) trusted.set(f.path, f);

    const manifestFiles = new Map<string, ManifestFile>();
    let downloadedBytes = 0;
    const ctx: FileContext = { spec, plan, dir, incomplete, hubUrl, options, reporter };

    const queue = [...plan.files];
    const worker = async () => {
      for (let file = queue.shift(); file; file = queue.shift()) {
        const done = await placeFile(ctx, file, journal, trusted);
        manifestFiles.set(file.path, { path: file.path, size: file.size, sha256: done.sha256 });
        outcomes[done.outcome]++;
        downloadedBytes += done.downloaded;
        const st = statSync(join(dir, file.path));
        journal.done[file.path] = { size: st.size, sha256: done.sha256, mtimeMs: st.mtimeMs };
        writeJsonAtomic(journalPath, journal);
        reporter.fileDone?.(spec.id, file, done.outcome);
      }
    };
    const concurrency = Math.max(1, Math.min(options.concurrency ?? 3, plan.files.length));
    await Promise.all(Array.from({ length: concurrency }, worker));

    // Files the previous snapshot had and this one does not (an older revision's shards) would
    // confuse a loader that globs a folder; only files the old manifest names are ours to remove.
    for (const path of trusted.keys()) if (!manifestFiles.has(path)) rmSync(join(dir, path), { force: true });

    const manifest: SnapshotManifest = {
      weights: 'hub',
      engine: spec.id,
      repo: spec.hubRepo,
      revision: plan.revision,
      files: [...manifestFiles.values()].sort((a, b) => byPath(a.path, b.path)),
      pulledAt: new Date().toISOString(),
    };
    writeJsonAtomic(join(dir, MANIFEST_FILE), manifest);
    unlock();
    rmSync(incomplete, { recursive: true, force: true });
    reporter.finish?.(spec.id);
    return { engine: spec.id, status: 'pulled', revision: plan.revision, manifest, downloadedBytes, outcomes };
  } finally {
    if (existsSync(incomplete)) unlock();
  }
}

interface FileContext {
  spec: EngineSpec;
  plan: RemotePlan;
  dir: string;
  incomplete: string;
  hubUrl: string;
  options: PullOptions;
  reporter: PullReporter;
}

/** Checks a file already in place; returns its sha256 when it is the wanted content. */
async function existingMatches(
  ctx: FileContext,
  file: PlannedFile,
  journal: PullJournal,
  trusted: Map<string, ManifestFile>,
): Promise<string | null> {
  const target = join(ctx.dir, file.path);
  const st = statOrNull(target);
  if (!st || !st.isFile() || st.size !== file.size) return null;
  if (file.sha256 && !ctx.options.force) {
    // Large files are not re-hashed on every resume: a file this pull (or the last verified
    // snapshot) already checked, and untouched since, is taken as is. --force re-hashes.
    const j = journal.done[file.path];
    if (j && j.sha256 === file.sha256 && j.size === st.size && j.mtimeMs === st.mtimeMs) return file.sha256;
    const t = trusted.get(file.path);
    if (t && t.sha256 === file.sha256 && t.size === st.size) return file.sha256;
  }
  if (file.gitOid) {
    const content = readFileSync(target);
    return gitBlobSha1(content) === file.gitOid ? createHash('sha256').update(content).digest('hex') : null;
  }
  const digest = await sha256File(target);
  return digest === file.sha256 ? digest : null;
}

async function placeFile(
  ctx: FileContext,
  file: PlannedFile,
  journal: PullJournal,
  trusted: Map<string, ManifestFile>,
): Promise<{ sha256: string; outcome: FileOutcome; downloaded: number }> {
  const existing = await existingMatches(ctx, file, journal, trusted);
  if (existing) {
    ctx.reporter.bytes?.(ctx.spec.id, file, file.size);
    return { sha256: existing, outcome: 'kept', downloaded: 0 };
  }
  return downloadVerified(ctx, file);
}

async function downloadVerified(ctx: FileContext, file: PlannedFile): Promise<{ sha256: string; outcome: FileOutcome; downloaded: number }> {
  const { spec, plan, options, reporter } = ctx;
  const key = file.sha256 ?? `git-${file.gitOid}`;
  const partial = join(ctx.incomplete, `${key}.partial`);
  const meta = `${partial}.json`;
  const retries = options.retries ?? 5;
  const stallMs = options.stallTimeoutMs ?? 60_000;
  const cred = credentials(options.token);
  let resumedAny = false;
  let downloaded = 0;
  let integrityFailures = 0;

  for (let attempt = 0; ; attempt++) {
    const controller = new AbortController();
    const hub = new HubFetch(controller.signal);
    let resumeOffset = 0;
    let resolveUrl = '';
    let rangeIgnored = false;
    // Refuses a 200 answer to a Range request: appending a whole file to a partial one corrupts it.
    const guardedFetch: typeof fetch = async (input, init) => {
      const response = await hub.fetch(input, init);
      const range = new Headers(init?.headers).get('range');
      if (resumeOffset > 0 && sameUrl(input, resolveUrl) && range?.startsWith(`bytes=${resumeOffset}-`) && response.status === 200) {
        rangeIgnored = true;
        await response.body?.cancel();
        throw new RangeIgnored('the server ignored the Range request');
      }
      return response;
    };
    let watchdog: NodeJS.Timeout | undefined;
    try {
      const info = await fileDownloadInfo({ repo: spec.hubRepo, path: file.path, revision: plan.revision, hubUrl: ctx.hubUrl, fetch: hub.fetch, ...cred });
      if (!info) throw new PullError(`${file.path} is listed at ${plan.revision.slice(0, 12)} but the hub has no such file.`, 'not-found');
      if (info.size !== file.size) {
        throw new PullError(`The hub serves ${info.size} bytes for ${file.path}; its listing says ${file.size}.`, 'integrity');
      }
      resolveUrl = info.url;

      let offset = statOrNull(partial)?.size ?? 0;
      const previousEtag = existsSync(meta) ? (JSON.parse(readFileSync(meta, 'utf8')) as { etag?: string }).etag : undefined;
      // Bytes saved under another ETag (or more bytes than the file has) cannot be continued.
      if (offset > 0 && (previousEtag !== info.etag || offset > file.size)) {
        truncateSync(partial, 0);
        offset = 0;
      }
      writeFileSync(meta, JSON.stringify({ path: file.path, etag: info.etag, size: file.size }));

      const hash = createHash(file.sha256 ? 'sha256' : 'sha1');
      if (!file.sha256) hash.update(`blob ${file.size}\0`);
      if (offset > 0) {
        const fh = await open(partial, 'r');
        try {
          for await (const chunk of fh.createReadStream({ highWaterMark: 1 << 20, autoClose: false })) hash.update(chunk as Buffer);
        } finally {
          await fh.close();
        }
      }

      if (offset < file.size) {
        if (offset > 0) resumedAny = true;
        resumeOffset = offset;
        reporter.fileStart?.(spec.id, file, offset);
        const blob = await downloadFile({
          repo: spec.hubRepo,
          path: file.path,
          revision: plan.revision,
          hubUrl: ctx.hubUrl,
          fetch: guardedFetch,
          downloadInfo: info,
          xet: options.xet ?? true,
          ...cred,
        });
        if (!blob) throw new PullError(`${file.path} vanished from the hub during the download.`, 'not-found');
        const part = offset > 0 ? blob.slice(offset) : blob;
        let lastByteAt = Date.now();
        watchdog = setInterval(() => {
          if (Date.now() - lastByteAt > stallMs) controller.abort(new Error(`no data for ${stallMs / 1000} s`));
        }, Math.min(1000, Math.max(50, stallMs / 4)));
        watchdog.unref();

        const out = await open(partial, 'a');
        try {
          const reader = part.stream().getReader();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            lastByteAt = Date.now();
            hash.update(value);
            await out.write(value);
            offset += value.length;
            downloaded += value.length;
            reporter.bytes?.(spec.id, file, value.length);
          }
          await out.sync();
        } finally {
          await out.close();
        }
      }

      const size = statSync(partial).size;
      const digest = hash.digest('hex');
      const expected = file.sha256 ?? file.gitOid!;
      if (size !== file.size || digest !== expected) {
        rmSync(partial, { force: true });
        rmSync(meta, { force: true });
        const what = size !== file.size ? `${size} bytes instead of ${file.size}` : `${file.sha256 ? 'sha256' : 'git sha1'} ${digest}, expected ${expected}`;
        integrityFailures++;
        if (integrityFailures >= 2) {
          throw new PullError(`${spec.id}: ${file.path} failed its check twice (${what}); nothing was kept.`, 'integrity');
        }
        reporter.retry?.(spec.id, file, attempt + 1, `downloaded ${what}; starting the file again`);
        continue;
      }

      let sha256 = digest;
      if (!file.sha256) sha256 = createHash('sha256').update(readFileSync(partial)).digest('hex');
      const target = join(ctx.dir, file.path);
      mkdirSync(dirname(target), { recursive: true });
      renameSync(partial, target);
      unlinkSync(meta);
      return { sha256, outcome: resumedAny ? 'resumed' : 'downloaded', downloaded };
    } catch (error) {
      if (error instanceof PullError) throw error;
      const explained = explainHubError(error, spec, {
        hubUrl: ctx.hubUrl,
        tokenSet: !!options.token,
        revision: plan.revision,
        note: hub.last && hub.last.status < 500 && hub.last.status !== 429 ? hub.last : undefined,
      });
      if (explained && (error as { statusCode?: number }).statusCode !== undefined) throw explained;
      if (hub.last && hub.last.status >= 400 && hub.last.status < 500 && hub.last.status !== 408 && hub.last.status !== 429 && hub.last.status !== 416) {
        throw explained ?? new PullError(`The hub answered ${hub.last.status} for ${file.path}.`, 'access');
      }
      if (rangeIgnored) rmSync(partial, { force: true });
      if (attempt >= retries) {
        const reason = error instanceof Error ? error.message : String(error);
        throw new PullError(
          `${spec.id}: ${file.path} failed after ${attempt + 1} attempts (${reason}); run the same command again to resume.`,
          'network',
        );
      }
      const reason = controller.signal.aborted ? String((controller.signal.reason as Error)?.message ?? 'aborted') : errorText(error);
      reporter.retry?.(spec.id, file, attempt + 1, reason);
      await delay(Math.min(8000, 250 * 2 ** attempt));
    } finally {
      if (watchdog) clearInterval(watchdog);
    }
  }
}

function sameUrl(input: string | URL | Request, url: string): boolean {
  const href = input instanceof Request ? input.url : String(input);
  try {
    return new URL(href).href === new URL(url).href;
  } catch {
    return false;
  }
}

function errorText(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: { message?: string; code?: string } }).cause;
    return cause?.code ?? cause?.message ?? error.message;
  }
  return String(error);
}
