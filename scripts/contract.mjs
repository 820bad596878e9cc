// `npm run test:contract`: the long contract run, kept out of `npm test`. Sets up like `npm test`
// (the contract tester included), then runs Schemathesis with more examples per operation and a
// longer fuzzing and stateful budget against a throwaway stack (test/contract/run-contract.ts).
import { join } from 'node:path';
import { DATA_DIR, ROOT, log, run } from './lib.mjs';
import { demoSnapshots, setup } from './setup.mjs';

setup({ contract: true });
const modelsDir = process.env.MODELS_DIR || join(DATA_DIR, 'models');
demoSnapshots(modelsDir);
log('contract: Schemathesis, every check, the long profile');
run(process.execPath, [join(ROOT, 'dist/test/contract/run-contract.js'), '--profile', process.argv[2] ?? 'long'], { env: { ...process.env, MODELS_DIR: modelsDir } });
