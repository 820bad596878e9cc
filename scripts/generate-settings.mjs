// Writes libs/config/worker-settings.json (the Python worker's settings: types, defaults, bounds)
// from the settings schema (libs/config/src/settings.ts); with --readme, also rewrites the README's
// configuration table. Runs from the build (dist/), so `npm run build` comes first; tests keep both current.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { withSettingsTable, workerSettingsJson } = createRequire(import.meta.url)(join(root, 'dist/libs/config/src/index.js'));
writeFileSync(join(root, 'libs/config/worker-settings.json'), workerSettingsJson());
console.log('wrote libs/config/worker-settings.json');
if (process.argv.includes('--readme')) {
  const readme = join(root, 'README.md');
  writeFileSync(readme, withSettingsTable(readFileSync(readme, 'utf8')));
  console.log('wrote the settings table in README.md');
}
