// Compiles apps/ and libs/ to dist/ with swc (type checking is `npm run typecheck`, run by the tests),
// then writes the engine catalog and settings JSON that the Python worker reads.
import { join } from 'node:path';
import { ROOT, run } from './lib.mjs';

run(join(ROOT, 'node_modules/.bin/swc'), ['apps', 'libs', 'test', 'bench', '-d', 'dist', '--quiet', '--copy-files']);
run('node', [join(ROOT, 'scripts/generate-catalog.mjs')]);
run('node', [join(ROOT, 'scripts/generate-settings.mjs')]);
