import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './config';
import { SETTING_NAMES, settingDoc, workerSettingsJson } from './settings';
import { withSettingsTable } from './settings-table';

describe('generated from the settings schema', () => {
  it('worker-settings.json, which the Python worker reads, is current (npm run build writes it)', () => {
    expect(readFileSync(join(REPO_ROOT, 'libs/config/worker-settings.json'), 'utf8')).toBe(workerSettingsJson());
  });
});

describe("README's configuration table", () => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');

  it('is the one generated from the schema (run `npm run settings` after changing a setting)', () => {
    expect(withSettingsTable(readme)).toBe(readme);
  });

  it('has a row for every setting with its default, and no row for a variable the schema lacks', () => {
    const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Database and migrations'));
    const rowNames = [...table.matchAll(/^\| `([A-Z0-9_]+)` \| ([^|]+) \|/gm)].map((m) => [m[1], m[2].trim()]);
    expect(rowNames.map(([name]) => name).sort()).toEqual([...SETTING_NAMES].sort());
    for (const [name, shownDefault] of rowNames) expect(shownDefault).toBe(settingDoc(name as (typeof SETTING_NAMES)[number]).shownDefault);
  });
});
