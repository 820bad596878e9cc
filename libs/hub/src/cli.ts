/**
 * `npm run models -- list | pull <engine…> | pull --all | verify [engine…] | random <engine…|all>`
 * The one way weights reach MODELS_DIR: by hand, in a Docker build, or in a volume.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CONFIG_ERROR_EXIT_CODE, ConfigError, parseSomeSettings, REPO_ROOT, type Settings } from '@flexy/config';
import { ENGINE_CATALOG, ENGINE_IDS, isEngineId, type EngineId, type EngineSpec } from '@flexy/engines';
import { PullError } from './errors';
import { formatBytes, shortRevision } from './format';
import { licenseNotice } from './notices';
import { ProgressReporter, type ProgressStream } from './progress';
import { hubUrlFrom, pullEngine, remotePlan, tokenFrom } from './pull';
import { defaultModelsDir, fixCommandFor, isBuiltSnapshot, isCommitSha, snapshotState, verifySnapshot, type SnapshotState } from './snapshot';

export interface CliIo {
  out: ProgressStream;
  err: ProgressStream;
  env: NodeJS.ProcessEnv;
}

const USAGE = `Usage: npm run models -- <command> [options]

Commands:
  list [--remote] [--json]       every engine: hub repo, pinned revision, size, local state
  pull <engine...> | --all       download snapshots at the catalog's pinned revision
       [--force]                 re-check a verified snapshot (re-download what differs) or replace a demo one
       [--revision REV]          another revision (branch or 40-hex commit), one engine only
       [--jobs N]                files downloaded at once (default 3)
       [--no-xet]                plain HTTP downloads even where the hub offers Xet
  verify [engine...] [--json]    hash every file; names each truncated or altered file
  random <engine...> | all       write real-size random-weight snapshots in the hub layouts (GPU hosts:
       [--force]                 the GPU tier's weights; FLUX.2's transformer pre-quantized to NF4),
       [--flux2-text-encoder]    with bench/gpu/snapshots.py; also FLUX.2's local text encoder (14 GB)
       [--tiny] [--no-quantize]  tiny configs, on the CPU (tests); FLUX.2 unquantized, for a CPU worker

Options:
  --models-dir DIR               where snapshots live (default: $MODELS_DIR, else ./.data/models)
  -h, --help

Environment:
  HF_TOKEN      hub access token, needed for gated repositories (FLUX.1-dev, FLUX.2-dev, SD3)
  HF_TOKEN_PATH file holding the token instead (a Docker secret), read when HF_TOKEN is unset
  HF_ENDPOINT   hub address (default https://huggingface.co)
  MODELS_DIR    snapshot folder
  WORKER_PYTHON Python that writes random snapshots (default: worker-python/.venv/bin/python)

Engines: ${ENGINE_IDS.join(', ')}
`;

/** The settings this CLI reads (libs/config/src/settings.ts); a service's bad setting does not stop it. */
const HUB_SETTINGS = ['MODELS_DIR', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH', 'HF_ENDPOINT', 'HF_HUB_OFFLINE', 'FLEXY_HUB_STALL_SECONDS', 'WORKER_PYTHON'] as const;
type HubSettings = Pick<Settings, (typeof HUB_SETTINGS)[number]>;

function pickEngines(names: string[], io: CliIo): EngineSpec[] | null {
  const unknown = names.filter((n) => !isEngineId(n));
  if (unknown.length > 0) {
    io.err.write(`Unknown engine: ${unknown.join(', ')}. Engines: ${ENGINE_IDS.join(', ')}\n`);
    return null;
  }
  return [...new Set(names)].map((n) => ENGINE_CATALOG[n as EngineId]);
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}

async function list(io: CliIo, settings: HubSettings, modelsDir: string, remote: boolean, json: boolean): Promise<number> {
  if (remote && settings.HF_HUB_OFFLINE) {
    io.err.write('HF_HUB_OFFLINE is set: --remote would reach the hub. Run `list` without it.\n');
    return 1;
  }
  const hubUrl = hubUrlFrom(settings);
  const token = tokenFrom(settings);
  type Row = SnapshotState & {
    engine: string;
    repo: string;
    /** The catalog's revision; `revision` is the commit on disk. */
    pinned: string;
    gated: boolean;
    license: string;
    remote?: { revision: string; bytes: number } | { error: string };
  };
  const records: Row[] = [];
  for (const id of ENGINE_IDS) {
    const spec = ENGINE_CATALOG[id];
    const record: Row = { engine: id, repo: spec.hubRepo, pinned: spec.revision, gated: spec.gated, license: spec.license, ...snapshotState(spec, modelsDir) };
    if (remote) {
      try {
        const plan = await remotePlan(spec, { hubUrl, token });
        record.remote = { revision: plan.revision, bytes: plan.totalBytes };
      } catch (error) {
        record.remote = { error: (error as Error).message };
      }
    }
    records.push(record);
  }
  if (json) {
    io.out.write(JSON.stringify({ modelsDir, engines: records }, null, 2) + '\n');
    return 0;
  }
  const rows = [['ENGINE', 'REPO', 'PINNED', 'LOCAL', 'SIZE', 'STATE']];
  for (const r of records) {
    const size =
      r.remote && 'bytes' in r.remote ? formatBytes(r.remote.bytes) : r.bytes !== undefined ? formatBytes(r.bytes) : '-';
    const pinned = isCommitSha(r.pinned) ? shortRevision(r.pinned) : `${r.pinned} (branch)`;
    rows.push([r.engine, r.repo + (r.gated ? ' [gated]' : ''), pinned, shortRevision(isBuiltSnapshot(r.state) ? undefined : r.revision), size, r.state]);
  }
  io.out.write(`MODELS_DIR ${modelsDir}\n`);
  io.out.write(table(rows));
  for (const r of records) {
    if (r.remote && 'error' in r.remote) io.out.write(`  ${r.engine}: hub: ${r.remote.error.split('\n')[0]}\n`);
    if (r.state !== 'verified') io.out.write(`  ${r.engine}: ${r.state}: ${r.detail}; fix: ${r.fixCommand}\n`);
  }
  return 0;
}

async function pull(
  io: CliIo,
  settings: HubSettings,
  modelsDir: string,
  specs: EngineSpec[],
  opts: { force: boolean; revision?: string; jobs: number; xet: boolean },
): Promise<number> {
  if (settings.HF_HUB_OFFLINE) {
    io.err.write('HF_HUB_OFFLINE is set: this environment must not reach the hub. Pull where the hub is reachable (a build stage, a setup host) and mount MODELS_DIR.\n');
    return 1;
  }
  const hubUrl = hubUrlFrom(settings);
  const token = tokenFrom(settings);
  const reporter = new ProgressReporter(io.out);
  let failed = 0;
  for (const spec of specs) {
    for (const line of licenseNotice(spec)) reporter.line(line);
    try {
      const result = await pullEngine(spec, {
        modelsDir,
        hubUrl,
        token,
        force: opts.force,
        revision: opts.revision,
        concurrency: opts.jobs,
        xet: opts.xet,
        reporter,
        stallTimeoutMs: settings.FLEXY_HUB_STALL_SECONDS * 1000,
      });
      if (result.status === 'skipped') {
        reporter.line(
          `${spec.id}: already verified at ${shortRevision(result.revision)}; nothing downloaded (--force re-checks it, \`verify ${spec.id}\` hashes it).`,
        );
      } else {
        const o = result.outcomes;
        reporter.line(
          `${spec.id}: verified snapshot at ${result.revision} in ${modelsDir}/${spec.localDir} ` +
            `(${o.downloaded} downloaded, ${o.resumed} resumed, ${o.kept} kept; ${formatBytes(result.downloadedBytes)} transferred)`,
        );
      }
    } catch (error) {
      failed++;
      if (error instanceof PullError) {
        io.err.write(`${spec.id}: ${error.message}\n`);
        for (const line of error.help) io.err.write(line + '\n');
      } else {
        io.err.write(`${spec.id}: pull failed: ${(error as Error)?.message ?? error}\n`);
      }
      const state = snapshotState(spec, modelsDir);
      if (state.state === 'partial') io.err.write(`${spec.id}: partial download kept; run the same command again to resume.\n`);
    }
  }
  return failed > 0 ? 1 : 0;
}

async function verify(io: CliIo, modelsDir: string, specs: EngineSpec[] | null, json: boolean): Promise<number> {
  const explicit = specs !== null;
  const targets = specs ?? ENGINE_IDS.map((id) => ENGINE_CATALOG[id]);
  const results: Array<{ engine: string } & SnapshotState> = [];
  let bad = 0;
  for (const spec of targets) {
    const cheap = snapshotState(spec, modelsDir);
    if (!explicit && cheap.state === 'missing') {
      results.push({ engine: spec.id, ...cheap });
      if (!json) io.out.write(`${spec.id}: missing (not pulled); skipped\n`);
      continue;
    }
    let hashed = 0;
    let lastLine = Date.now();
    const state = await verifySnapshot(spec, modelsDir, {
      onBytes: (n) => {
        hashed += n;
        if (!json && Date.now() - lastLine > 10_000) {
          lastLine = Date.now();
          io.out.write(`${spec.id}: hashed ${formatBytes(hashed)}${cheap.bytes ? ` of ${formatBytes(cheap.bytes)}` : ''}\n`);
        }
      },
    });
    results.push({ engine: spec.id, ...state });
    const ok = state.state === 'verified' || isBuiltSnapshot(state.state);
    if (!ok) bad++;
    if (json) continue;
    if (state.state === 'verified') {
      io.out.write(`${spec.id}: verified at ${shortRevision(state.revision)} (${state.detail})\n`);
    } else if (isBuiltSnapshot(state.state)) {
      io.out.write(`${spec.id}: ${state.state} snapshot (random weights), nothing to verify against the hub\n`);
    } else {
      io.out.write(`${spec.id}: ${state.state.toUpperCase()}: ${state.detail}\n`);
      for (const p of state.problems ?? []) {
        const what =
          p.problem === 'missing'
            ? 'missing'
            : p.problem === 'size'
              ? `truncated or resized: ${p.actual} bytes, manifest says ${p.expected}`
              : `altered: sha256 ${p.actual}, manifest says ${p.expected}`;
        io.out.write(`  ${p.path}: ${what}\n`);
      }
      io.out.write(`  fix: ${state.fixCommand}\n`);
    }
  }
  if (json) io.out.write(JSON.stringify({ modelsDir, engines: results }, null, 2) + '\n');
  return bad > 0 ? 1 : 0;
}

/** The writer is Python (it builds the models with diffusers and transformers): run it, relaying its output. */
function writeRandomSnapshots(io: CliIo, settings: HubSettings, modelsDir: string, specs: EngineSpec[], flags: string[]): Promise<number> {
  const python = settings.WORKER_PYTHON ?? join(REPO_ROOT, 'worker-python/.venv/bin/python');
  const args = [join(REPO_ROOT, 'bench/gpu/snapshots.py'), '--out', modelsDir, ...specs.flatMap((s) => ['--engine', s.id]), ...flags];
  return new Promise((resolvePromise) => {
    const child = spawn(python, args, { env: { ...io.env, PYTHONUNBUFFERED: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (chunk: Buffer) => io.out.write(chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => io.err.write(chunk.toString()));
    child.on('error', (error) => {
      io.err.write(`could not run ${python}: ${error.message} (set WORKER_PYTHON to a Python with torch and diffusers)\n`);
      resolvePromise(1);
    });
    child.on('exit', (code, signal) => resolvePromise(code ?? (signal ? 1 : 0)));
  });
}

export async function main(argv: string[], io: CliIo = { out: process.stdout, err: process.stderr, env: process.env }): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        all: { type: 'boolean', default: false },
        force: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        remote: { type: 'boolean', default: false },
        revision: { type: 'string' },
        jobs: { type: 'string', default: '3' },
        'no-xet': { type: 'boolean', default: false },
        tiny: { type: 'boolean', default: false },
        'no-quantize': { type: 'boolean', default: false },
        'flux2-text-encoder': { type: 'boolean', default: false },
        'models-dir': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    io.err.write(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [command, ...names] = positionals;
  if (values.help || !command) {
    (values.help ? io.out : io.err).write(USAGE);
    return values.help ? 0 : 2;
  }
  let settings: HubSettings;
  try {
    settings = parseSomeSettings(io.env, HUB_SETTINGS);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    io.err.write(`models: invalid configuration\n${error.problems.map((p) => `  ${p}\n`).join('')}`);
    return CONFIG_ERROR_EXIT_CODE;
  }
  const modelsDir = defaultModelsDir({ MODELS_DIR: values['models-dir'] ?? settings.MODELS_DIR });

  switch (command) {
    case 'list':
      return list(io, settings, modelsDir, values.remote, values.json);
    case 'pull': {
      if (values.all && names.length > 0) {
        io.err.write('Name engines or pass --all, not both.\n');
        return 2;
      }
      const specs = values.all ? ENGINE_IDS.map((id) => ENGINE_CATALOG[id]) : pickEngines(names, io);
      if (!specs) return 2;
      if (specs.length === 0) {
        io.err.write(`Name at least one engine, or pass --all.\n\n${USAGE}`);
        return 2;
      }
      if (values.revision && specs.length !== 1) {
        io.err.write('--revision applies to one engine at a time.\n');
        return 2;
      }
      const jobs = Number(values.jobs);
      if (!Number.isInteger(jobs) || jobs < 1 || jobs > 16) {
        io.err.write('--jobs takes a whole number from 1 to 16.\n');
        return 2;
      }
      return pull(io, settings, modelsDir, specs, { force: values.force, revision: values.revision, jobs, xet: !values['no-xet'] });
    }
    case 'verify': {
      const specs = names.length > 0 ? pickEngines(names, io) : null;
      if (names.length > 0 && !specs) return 2;
      return verify(io, modelsDir, specs, values.json);
    }
    case 'random': {
      const specs = names.length === 1 && names[0] === 'all' ? ENGINE_IDS.map((id) => ENGINE_CATALOG[id]) : pickEngines(names, io);
      if (!specs) return 2;
      if (specs.length === 0) {
        io.err.write(`Name at least one engine, or all.\n\n${USAGE}`);
        return 2;
      }
      const flags = [values.force && '--force', values.tiny && '--tiny', values['flux2-text-encoder'] && '--flux2-text-encoder', values['no-quantize'] && '--no-quantize'];
      return writeRandomSnapshots(io, settings, modelsDir, specs, flags.filter((f): f is string => typeof f === 'string'));
    }
    default:
      io.err.write(`Unknown command: ${command}\n\n${USAGE}`);
      return 2;
  }
}

export { fixCommandFor };

if (require.main === module) {
  // `npm run models -- list | head` closes the pipe early; that is not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
  process.on('SIGINT', () => {
    process.stderr.write('\nInterrupted: finished files and the partial one stay on disk; run the same command again to resume.\n');
    process.exit(130);
  });
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      process.stderr.write(`${(error as Error)?.stack ?? error}\n`);
      process.exitCode = 1;
    },
  );
}
