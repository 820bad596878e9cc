// npm run db:migration:new -- <name>
// Writes prisma/migrations/{sqlite,postgresql}/<timestamp>_<name>/migration.sql: the SQL that takes
// the committed migrations to the current prisma/schema.prisma, computed by Prisma's schema
// engine. Both folders always get the same migration names.
//
// PostgreSQL migrations are replayed on a shadow database: on the server at SHADOW_DATABASE_URL
// (a role allowed to CREATE DATABASE), or else on a temporary local cluster (see temp-postgres.cjs).
import core from './db-core.cjs';
import tempPostgres from './temp-postgres.cjs';

const name = process.argv.slice(2).find((arg) => !arg.startsWith('-'));
if (!name) {
  console.error('usage: npm run db:migration:new -- <name>');
  process.exit(2);
}

const sqlite = await core.diffMigrationsToSchema('sqlite');

let server;
let postgresql;
try {
  let serverUrl = process.env.SHADOW_DATABASE_URL;
  if (!serverUrl) {
    server = await tempPostgres.startTemporaryPostgres();
    serverUrl = server.url;
  }
  postgresql = await core.diffMigrationsToSchema('postgresql', serverUrl);
} finally {
  await server?.stop();
}

if (!sqlite && !postgresql) {
  console.log('prisma/schema.prisma already matches the migrations; nothing written.');
} else {
  const folder = core.migrationFolderName(name);
  const empty = '-- This is an empty migration.\n';
  for (const [provider, script] of [['sqlite', sqlite], ['postgresql', postgresql]]) {
    console.log(`wrote ${core.writeMigration(provider, folder, script || empty)}`);
  }
  console.log('Review the SQL, then: npm run db:generate && npm run db:migrate');
}
// The engine leaves a timer behind; everything it opened is closed by now.
process.exit(0);
