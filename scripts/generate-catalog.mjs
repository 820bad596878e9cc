// Writes libs/engines/engine-catalog.json from the TypeScript catalog and the request rules every
// engine shares (libs/contracts), for the Python worker and the Docker builds. Runs from the compiled catalog (dist/), so `npm run build` comes first.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const load = createRequire(import.meta.url);
const { ENGINE_CATALOG } = load(join(root, 'dist/libs/engines/src/catalog.js'));
const { SEED_RANGE } = load(join(root, 'dist/libs/contracts/src/generation.js'));
export const catalogJson = () =>
  JSON.stringify(
    { generated_from: ['libs/engines/src/catalog.ts', 'libs/contracts/src/generation.ts'], request: { seed: SEED_RANGE }, engines: ENGINE_CATALOG },
    null,
    2,
  ) + '\n';

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(join(root, 'libs/engines/engine-catalog.json'), catalogJson());
  console.log('wrote libs/engines/engine-catalog.json');
}
