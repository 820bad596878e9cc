// `npm test`: sets up like `npm start`, then runs every tier that runs on this machine: type check,
// TypeScript unit specs, integration and end-to-end tests against real Redis, SQLite and the Python
// worker, and the worker's pytest suite. Extra arguments go to Jest (e.g. `npm test -- test/e2e`).
import { join } from 'node:path';
import { DATA_DIR, ROOT, log, run } from './lib.mjs';
import { demoSnapshots, setup, WORKER_PYTHON } from './setup.mjs';

const jestArgs = process.argv.slice(2);
setup({ browser: true, contract: true });
const modelsDir = process.env.MODELS_DIR || join(DATA_DIR, 'models');
demoSnapshots(modelsDir);
const env = { ...process.env, MODELS_DIR: modelsDir };

log('type check');
run(join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json', '--noEmit']);
log('jest: unit specs, integration and end-to-end tests');
// --forceExit: a suite that failed half-way may leave a child's pipe open; the run must still end.
run(join(ROOT, 'node_modules/.bin/jest'), ['--runInBand', '--forceExit', ...jestArgs], { env });
if (jestArgs.length === 0) {
  log('pytest: the worker suite');
  run(WORKER_PYTHON, ['-m', 'pytest', '-q'], { cwd: join(ROOT, 'worker-python'), env });
}
log('all tests passed');
