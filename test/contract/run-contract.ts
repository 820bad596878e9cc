/**
 * The contract run: starts a throwaway stack (test/support/stack.ts: a private Redis, a fresh SQLite
 * database, one supervisor with its CPU worker on the demo snapshots, the gateway in keys mode) and
 * runs Schemathesis against the service's own /docs/openapi.json with every check, in all four
 * phases (examples, coverage, fuzzing, stateful). Exits with Schemathesis's status.
 *
 *   node dist/test/contract/run-contract.js [--profile suite|long]
 *
 * `suite` (test/contract/contract.test.ts, in `npm test`) is bounded to a few minutes; `long`
 * (`npm run test:contract`) tries more examples per operation and walks the links for longer.
 *
 * Everything runs in a network namespace of its own with only a loopback interface: the fuzzer
 * writes webhook URLs to arbitrary public hosts, and nothing it generates may ever leave this
 * machine (a delivery attempt fails at once, as it would against an unreachable host).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startStack, ROOT } from '../support/stack';

export const PROFILES = {
  suite: { maxExamples: 5, maxTimeS: 150 },
  long: { maxExamples: 60, maxTimeS: 1200 },
} as const;
export type ProfileName = keyof typeof PROFILES;

const VENV = join(ROOT, '.data/tools/contract-venv');
const SCHEMATHESIS = join(VENV, 'bin/schemathesis');
const CONFIG = join(ROOT, 'test/contract/schemathesis.toml');
const IN_NAMESPACE = 'FLEXY_CONTRACT_NETNS';

function profileFromArgs(argv: string[]): ProfileName {
  const i = argv.indexOf('--profile');
  const name = i >= 0 ? argv[i + 1] : 'suite';
  if (name !== 'suite' && name !== 'long') throw new Error(`--profile must be suite or long, not ${name}`);
  return name;
}

/** Runs this script again inside a new network namespace whose loopback is up. */
function reexecIsolated(): number {
  // Root makes the namespace directly; anyone else through a user namespace mapped to root.
  const userns = process.getuid?.() === 0 ? [] : ['--user', '--map-root-user'];
  const script = `ip link set lo up && exec "${process.execPath}" "${__filename}" ${process.argv.slice(2).map((a) => `'${a}'`).join(' ')}`;
  const run = spawnSync('unshare', [...userns, '--net', 'sh', '-c', script], { stdio: 'inherit', env: { ...process.env, [IN_NAMESPACE]: '1' } });
  if (run.error) throw run.error;
  return run.status ?? 1;
}

/** A key with limits no contract run reaches: the run checks answers, not quotas. */
function createApiKey(env: NodeJS.ProcessEnv): string {
  const out = spawnSync(process.execPath, [join(ROOT, 'dist/apps/gateway/src/auth/keys.cli.js'), 'create', '--name', 'contract', '--rate', '1000000', '--concurrency', '1000000'], {
    env,
    encoding: 'utf8',
  });
  if (out.status !== 0) throw new Error(`keys create failed: ${out.stderr}`);
  return (JSON.parse(out.stdout.trim().split('\n').pop()!) as { key: string }).key;
}

async function main(): Promise<number> {
  if (!process.env[IN_NAMESPACE]) return reexecIsolated();
  const profile = PROFILES[profileFromArgs(process.argv)];
  const stack = await startStack({
    supervisors: 1,
    env: {
      // Keys mode, so that the auth checks (a missing or bad key is a 401) have something to check.
      AUTH_MODE: 'keys',
      // A synchronous call gives up after 3 s with the documented 504, instead of holding the
      // fuzzer while the one CPU worker works through the queue it filled.
      SYNC_WAIT_MS: '3000',
      HOST: '127.0.0.1',
    },
  });
  try {
    const key = createApiKey(stack.env);
    const reports = join(ROOT, 'test-artifacts/contract');
    mkdirSync(reports, { recursive: true });
    const args = [
      '--config-file', CONFIG,
      'run', `${stack.url}/docs/openapi.json`,
      '--checks', 'all',
      '--phases', 'examples,coverage,fuzzing,stateful',
      '--max-examples', String(profile.maxExamples),
      '--max-time', String(profile.maxTimeS),
      '--request-timeout', '20',
      '--workers', '1',
      '--header', `Authorization: Bearer ${key}`,
      '--generation-database', 'none',
      '--report', 'junit',
      '--report-dir', reports,
      '--no-color',
    ];
    // From the reports folder, where Schemathesis also keeps its own state (.schemathesis/).
    const child = spawn(SCHEMATHESIS, args, { stdio: 'inherit', cwd: reports });
    return await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
    });
  } finally {
    await stack.stop();
  }
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      console.error(err instanceof Error ? err.stack : String(err));
      process.exit(1);
    },
  );
}
