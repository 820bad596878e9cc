// npm run db:generate — the Prisma clients for SQLite and PostgreSQL, into
// libs/persistence/src/generated/ (gitignored). The PostgreSQL schema is derived from
// prisma/schema.prisma on every run, so there is no second schema to keep in step.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import core from './db-core.cjs';

const require = createRequire(import.meta.url);
const prismaCli = require.resolve('prisma/build/index.js');

fs.mkdirSync(core.GENERATED_DIR, { recursive: true });
fs.writeFileSync(core.DERIVED_POSTGRES_SCHEMA_PATH, core.readSchema('postgresql'));

const env = {
  ...process.env,
  // generate never runs the native schema engine, but the CLI tries to download it unless a
  // path is given; any existing file stops that (offline machines, no binaries.prisma.sh).
  PRISMA_SCHEMA_ENGINE_BINARY: process.env.PRISMA_SCHEMA_ENGINE_BINARY || (fs.existsSync('/bin/false') ? '/bin/false' : process.execPath),
  CHECKPOINT_DISABLE: '1',
  PRISMA_HIDE_UPDATE_MESSAGE: '1',
};

for (const schema of [core.SCHEMA_PATH, core.DERIVED_POSTGRES_SCHEMA_PATH]) {
  const result = spawnSync(process.execPath, [prismaCli, 'generate', '--schema', schema], { env, cwd: core.REPO_ROOT, stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}
