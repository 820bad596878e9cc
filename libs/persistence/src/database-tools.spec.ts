import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { databaseProvider, dbCore, resolveDatabaseUrl } from './database-tools';

/** The tooling module's pure helpers, beyond what the library itself calls. */
interface DbCoreHelpers {
  REPO_ROOT: string;
  SCHEMA_PATH: string;
  GENERATED_DIR: string;
  DERIVED_POSTGRES_SCHEMA_PATH: string;
  readSchema(provider: 'sqlite' | 'postgresql'): string;
  derivePostgresSchema(source: string): string;
  migrationFolderName(name: string, now?: Date): string;
}
const core = dbCore() as unknown as ReturnType<typeof dbCore> & DbCoreHelpers;

describe('database URLs', () => {
  it('default to the SQLite file in DATA_DIR, else <repo>/.data', () => {
    expect(resolveDatabaseUrl({})).toBe(`file:${join(core.REPO_ROOT, '.data', 'flexyface.db')}`);
    expect(resolveDatabaseUrl({ DATA_DIR: '/srv/flexy' })).toBe('file:/srv/flexy/flexyface.db');
    expect(resolveDatabaseUrl({ DATABASE_URL: ' postgresql://u:p@db/flexy ' })).toBe('postgresql://u:p@db/flexy');
  });

  it('name their provider, and refuse anything else', () => {
    expect(databaseProvider('file:./x.db')).toBe('sqlite');
    expect(databaseProvider('postgres://db/flexy')).toBe('postgresql');
    expect(databaseProvider('postgresql://db/flexy')).toBe('postgresql');
    expect(() => databaseProvider('mysql://db/flexy')).toThrow(/file:<path>/);
  });

  it('resolve SQLite paths as the driver adapter does and hide passwords in messages', () => {
    expect(core.sqliteFilePath('file:/var/lib/flexy.db?connection_limit=1')).toBe('/var/lib/flexy.db');
    expect(core.sqliteFilePath('file:rel/x.db')).toBe(join(process.cwd(), 'rel/x.db'));
    expect(core.sqliteFilePath('file::memory:')).toBe(':memory:');
    expect(core.redactUrl('postgresql://flexy:s3cret@db:5432/flexy')).toBe('postgresql://flexy:***@db:5432/flexy');
  });
});

describe('the PostgreSQL schema', () => {
  it('differs from schema.prisma only in its provider and client output', () => {
    const source = readFileSync(core.SCHEMA_PATH, 'utf8');
    const derived = core.derivePostgresSchema(source);
    const changed = (a: string[], b: string[]) => b.filter((line, i) => line !== a[i]);
    const derivedLines = derived.split('\n').slice(1); // minus the "derived, do not edit" header
    expect(derivedLines).toHaveLength(source.split('\n').length);
    expect(changed(source.split('\n'), derivedLines).map((l) => l.trim())).toEqual([
      'output       = "./postgresql"',
      'provider = "postgresql"',
    ]);
  });

  it('refuses a schema.prisma it cannot derive from', () => {
    expect(() => core.derivePostgresSchema('datasource db {\n  provider = "postgresql"\n}\n')).toThrow(/provider = "sqlite"/);
  });
});

describe('generated clients', () => {
  // Generated code is not committed; a stale one compiles against an older schema.
  it('are up to date with schema.prisma (else run npm run db:generate)', () => {
    const inline = (provider: string) => {
      const text = readFileSync(join(core.GENERATED_DIR, provider, 'internal', 'class.ts'), 'utf8');
      const match = /"inlineSchema": ("(?:[^"\\]|\\.)*")/.exec(text);
      return match ? (JSON.parse(match[1]) as string) : null;
    };
    expect(inline('sqlite')).toBe(core.readSchema('sqlite'));
    expect(inline('postgresql')).toBe(core.readSchema('postgresql'));
    expect(readFileSync(core.DERIVED_POSTGRES_SCHEMA_PATH, 'utf8')).toBe(core.readSchema('postgresql'));
  });
});

describe('migration folder names', () => {
  it('follow Prisma: UTC timestamp then a snake_case name', () => {
    expect(core.migrationFolderName('Add generation tags!', new Date('2025-03-04T05:06:07Z'))).toBe('20250304050607_add_generation_tags');
    expect(() => core.migrationFolderName('  ')).toThrow(/needs a name/);
  });
});
