// npm run db:migrate — applies pending migrations to DATABASE_URL (default: the embedded SQLite
// file under .data/), recording them in _prisma_migrations as `prisma migrate deploy` does.
import core from './db-core.cjs';

const url = core.resolveDatabaseUrl();
try {
  const result = await core.applyMigrations(url);
  const target = `${result.provider} ${core.redactUrl(url)}`;
  if (result.applied.length === 0) console.log(`No pending migrations for ${target}.`);
  else console.log(`Applied to ${target}:\n${result.applied.map((name) => `  ${name}`).join('\n')}`);
  for (const name of result.edited) console.warn(`warning: ${name} was edited after it was applied`);
  for (const name of result.unknown) console.warn(`warning: ${name} is applied in the database but missing from prisma/migrations/${result.provider}`);
  // The engine leaves a timer behind; everything it opened is closed by now.
  process.exit(0);
} catch (error) {
  console.error(`db:migrate failed for ${core.redactUrl(url)}:\n${error.message}`);
  process.exit(1);
}
