/**
 * Local snapshot state: what MODELS_DIR/<localDir> holds for an engine, judged against the manifest
 * the download CLI wrote. The cheap check (`snapshotState`) reads the manifest and stats each file;
 * the deep check (`verifySnapshot`) also hashes every byte.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { EngineSpec } from '@flexy/engines';

export const MANIFEST_FILE = 'flexyface-manifest.json';
export const DEMO_MARKER_FILE = 'flexyface-demo.json';
/** Download staging folder inside the engine folder: same filesystem, so the final rename is atomic. */
export const INCOMPLETE_DIR = '.flexyface-incomplete';
export const JOURNAL_FILE = 'journal.json';

export type SnapshotStateName = 'missing' | 'partial' | 'verified' | 'altered' | 'demo' | 'random';

/** Snapshots built locally with random weights (tiny demo ones, or real-size ones for GPU hosts), not pulled. */
export const isBuiltSnapshot = (state: SnapshotStateName): state is 'demo' | 'random' => state === 'demo' || state === 'random';

export interface ManifestFile {
  path: string;
  size: number;
  sha256: string;
}

export interface SnapshotManifest {
  weights: 'hub';
  engine: string;
  repo: string;
  /** The commit the files came from (a branch in the catalog is resolved to its commit at pull time). */
  revision: string;
  files: ManifestFile[];
  pulledAt: string;
}

/** Progress of an unfinished pull, kept beside the partial files so `list` can say how far it got. */
export interface PullJournal {
  engine: string;
  repo: string;
  revision: string;
  totalFiles: number;
  totalBytes: number;
  done: Record<string, { size: number; sha256: string; mtimeMs: number }>;
}

export interface FileProblem {
  path: string;
  problem: 'missing' | 'size' | 'sha256';
  expected: string | number;
  actual?: string | number;
}

export interface SnapshotState {
  state: SnapshotStateName;
  /** Commit of the snapshot on disk (from its manifest, or from the unfinished pull's journal). */
  revision?: string;
  /** Bytes of the snapshot: the manifest's total, or what is on disk so far for a partial one. */
  bytes?: number;
  /** The command that brings the snapshot to `verified` (or re-checks it when it already is). */
  fixCommand: string;
  /** One line saying why the state is what it is. */
  detail: string;
  /** Files that failed the check (altered snapshots only). */
  problems?: FileProblem[];
}

export interface SnapshotStateOptions {
  /** The revision to hold the snapshot to instead of the catalog's (a 40-hex commit, or a branch). */
  revision?: string;
}

export const isCommitSha = (revision: string): boolean => /^[0-9a-f]{40}$/.test(revision);

export function defaultModelsDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.MODELS_DIR || '.data/models');
}

export function snapshotDir(spec: EngineSpec, modelsDir: string): string {
  return join(modelsDir, spec.localDir);
}

export function fixCommandFor(spec: EngineSpec, state: SnapshotStateName, modelsDir: string): string {
  const dirFlag = resolve(modelsDir) === defaultModelsDir() ? '' : ` --models-dir ${quoteArg(resolve(modelsDir))}`;
  switch (state) {
    case 'verified':
      return `npm run models -- verify ${spec.id}${dirFlag}`;
    case 'altered':
    case 'demo':
    case 'random':
      return `npm run models -- pull ${spec.id} --force${dirFlag}`;
    default:
      return `npm run models -- pull ${spec.id}${dirFlag}`;
  }
}

function quoteArg(value: string): string {
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

export function readManifest(dir: string): SnapshotManifest | 'invalid' | null {
  const file = join(dir, MANIFEST_FILE);
  if (!existsSync(file)) return null;
  try {
    const data = JSON.parse(readFileSync(file, 'utf8')) as SnapshotManifest;
    const filesOk =
      Array.isArray(data.files) &&
      data.files.every((f) => typeof f.path === 'string' && Number.isInteger(f.size) && /^[0-9a-f]{64}$/.test(f.sha256));
    if (data.weights !== 'hub' || typeof data.repo !== 'string' || typeof data.revision !== 'string' || !filesOk) {
      return 'invalid';
    }
    return data;
  } catch {
    return 'invalid';
  }
}

export function readJournal(dir: string): PullJournal | null {
  try {
    return JSON.parse(readFileSync(join(dir, INCOMPLETE_DIR, JOURNAL_FILE), 'utf8')) as PullJournal;
  } catch {
    return null;
  }
}

function readDemoMarker(dir: string): { weights: 'demo' | 'random'; revision?: string } | null {
  const file = join(dir, DEMO_MARKER_FILE);
  if (!existsSync(file)) return null;
  try {
    const data = JSON.parse(readFileSync(file, 'utf8')) as { weights?: string; revision?: string };
    return data.weights === 'demo' || data.weights === 'random' ? { ...data, weights: data.weights } : null;
  } catch {
    return null;
  }
}

function diskBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) total += diskBytes(full);
    else if (entry.isFile()) total += statSync(full).size;
  }
  return total;
}

/** Judges a manifest against the wanted repo and revision; null when it is acceptable. */
function manifestMismatch(spec: EngineSpec, manifest: SnapshotManifest, wanted: string): string | null {
  if (manifest.repo !== spec.hubRepo) return `holds ${manifest.repo}, the catalog names ${spec.hubRepo}`;
  if (isCommitSha(wanted) && manifest.revision !== wanted) {
    return `holds revision ${manifest.revision.slice(0, 12)}, the catalog pins ${wanted.slice(0, 12)}`;
  }
  return null;
}

/** Size-only check of every file in the manifest. */
function cheapProblems(dir: string, manifest: SnapshotManifest): FileProblem[] {
  const problems: FileProblem[] = [];
  for (const file of manifest.files) {
    let size: number;
    try {
      size = statSync(join(dir, file.path)).size;
    } catch {
      problems.push({ path: file.path, problem: 'missing', expected: file.size });
      continue;
    }
    if (size !== file.size) problems.push({ path: file.path, problem: 'size', expected: file.size, actual: size });
  }
  return problems;
}

function describeProblems(problems: FileProblem[]): string {
  const first = problems
    .slice(0, 3)
    .map((p) =>
      p.problem === 'missing'
        ? `${p.path} is missing`
        : p.problem === 'size'
          ? `${p.path} has ${p.actual} bytes, expected ${p.expected}`
          : `${p.path} fails its sha256 check`,
    );
  const more = problems.length > 3 ? ` (and ${problems.length - 3} more)` : '';
  return first.join('; ') + more;
}

/**
 * The state of an engine's snapshot, cheaply: the manifest plus one stat per file, no hashing.
 * Synchronous on purpose: a handful of stats, safe to call per request in the gateway.
 */
export function snapshotState(spec: EngineSpec, modelsDir: string, options: SnapshotStateOptions = {}): SnapshotState {
  const dir = snapshotDir(spec, modelsDir);
  const wanted = options.revision ?? spec.revision;
  const result = (state: SnapshotStateName, detail: string, extra: Partial<SnapshotState> = {}): SnapshotState => ({
    state,
    detail,
    fixCommand: fixCommandFor(spec, state, modelsDir),
    ...extra,
  });

  if (!existsSync(dir) || readdirSync(dir).length === 0) {
    return result('missing', `no snapshot in ${dir}`);
  }
  const manifest = readManifest(dir);
  if (manifest && manifest !== 'invalid') {
    const bytes = manifest.files.reduce((sum, f) => sum + f.size, 0);
    const extra = { revision: manifest.revision, bytes };
    const mismatch = manifestMismatch(spec, manifest, wanted);
    if (mismatch) return result('altered', mismatch, extra);
    const problems = cheapProblems(dir, manifest);
    if (problems.length > 0) return result('altered', describeProblems(problems), { ...extra, problems });
    return result('verified', `${manifest.files.length} files match the manifest (sizes checked)`, extra);
  }
  const demo = readDemoMarker(dir);
  if (demo) {
    const detail =
      demo.weights === 'random'
        ? 'random snapshot: real-size random weights built locally (GPU tier), not the real model'
        : 'demo snapshot: tiny random weights built locally, not the real model';
    return result(demo.weights, detail, {
      revision: demo.revision,
      bytes: diskBytes(dir),
    });
  }
  const journal = readJournal(dir);
  const bytes = diskBytes(dir);
  if (manifest === 'invalid') return result('partial', `${MANIFEST_FILE} is unreadable`, { bytes });
  if (journal) {
    const doneFiles = Object.keys(journal.done).length;
    return result('partial', `download unfinished: ${doneFiles} of ${journal.totalFiles} files complete`, {
      revision: journal.revision,
      bytes,
    });
  }
  return result('partial', `files present but no ${MANIFEST_FILE}`, { bytes });
}

export async function sha256File(path: string, onBytes?: (n: number) => void): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    onBytes?.((chunk as Buffer).length);
  }
  return hash.digest('hex');
}

export interface VerifyOptions extends SnapshotStateOptions {
  /** Called as bytes are hashed, for progress display. */
  onBytes?: (n: number) => void;
  onFile?: (path: string, ok: boolean) => void;
}

/**
 * The full check: the cheap state first, then a sha256 pass over every file of a snapshot that the
 * cheap check calls verified. Finds a file altered in place (same size, different bytes).
 */
export async function verifySnapshot(spec: EngineSpec, modelsDir: string, options: VerifyOptions = {}): Promise<SnapshotState> {
  const cheap = snapshotState(spec, modelsDir, options);
  if (cheap.state !== 'verified') return cheap;
  const dir = snapshotDir(spec, modelsDir);
  const manifest = readManifest(dir) as SnapshotManifest;
  const problems: FileProblem[] = [];
  for (const file of manifest.files) {
    const actual = await sha256File(join(dir, file.path), options.onBytes);
    const ok = actual === file.sha256;
    if (!ok) problems.push({ path: file.path, problem: 'sha256', expected: file.sha256, actual });
    options.onFile?.(file.path, ok);
  }
  if (problems.length > 0) {
    return {
      ...cheap,
      state: 'altered',
      detail: describeProblems(problems),
      fixCommand: fixCommandFor(spec, 'altered', modelsDir),
      problems,
    };
  }
  return { ...cheap, detail: `${manifest.files.length} files match the manifest (sha256 checked)` };
}
