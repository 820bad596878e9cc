// Writes libs/engines/engine-catalog.json from the TypeScript catalog, for the Python worker and the
// Docker builds. Runs from the compiled catalog (dist/), so `npm run build` comes first.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { ENGINE_CATALOG } = createRequire(import.meta.url)(join(root, 'dist/libs/engines/src/catalog.js'));
export const catalogJson = () =>
  JSON.stringify({ generated_from: 'libs/engines/src/catalog.ts', engines: ENGINE_CATALOG }, null, 2) + '\n';

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(join(root, 'libs/engines/engine-catalog.json'), catalogJson());
  console.log('wrote libs/engines/engine-catalog.json');
}
