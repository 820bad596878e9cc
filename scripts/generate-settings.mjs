// Rewrites the README's configuration table from the settings schema (libs/config/src/settings.ts).
// Runs from the build (dist/), so `npm run build` comes first; a test keeps the README current.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { withSettingsTable } = createRequire(import.meta.url)(join(root, 'dist/libs/config/src/index.js'));
const readme = join(root, 'README.md');
writeFileSync(readme, withSettingsTable(readFileSync(readme, 'utf8')));
console.log('wrote the settings table in README.md');
