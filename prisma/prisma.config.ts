// For the Prisma CLI itself where its native schema engine is installed (it cannot be downloaded
// offline, which is why prisma/tools drive the WebAssembly build of the same engine):
//   npx prisma migrate status --config prisma/prisma.config.ts
//   npx prisma migrate deploy --config prisma/prisma.config.ts
// It picks the schema and migrations folder matching DATABASE_URL exactly as prisma/tools does,
// so either can take over a database the other migrated. The PostgreSQL schema file is written
// by `npm run db:generate`.
import { defineConfig } from 'prisma/config';
import core from './tools/db-core.cjs';

const url: string = core.resolveDatabaseUrl();
const provider: 'sqlite' | 'postgresql' = core.providerOf(url);

export default defineConfig({
  schema: provider === 'sqlite' ? core.SCHEMA_PATH : core.DERIVED_POSTGRES_SCHEMA_PATH,
  migrations: { path: core.MIGRATIONS_DIRS[provider] },
  datasource: { url },
});
