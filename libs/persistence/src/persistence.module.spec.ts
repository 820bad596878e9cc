import { Test } from '@nestjs/testing';
import { GenerationsRepository } from './generations.repository';
import { everyOwner } from './owner-scope';
import { PersistenceModule } from './persistence.module';
import { PrismaService } from './prisma.service';
import { tempDir, type TempDir } from './testing/databases';

jest.setTimeout(60_000);

describe('PersistenceModule', () => {
  let dir: TempDir;
  beforeAll(() => (dir = tempDir()));
  afterAll(() => dir.remove());

  it('migrates an empty database at start when asked to, then serves the repository', async () => {
    const databaseUrl = dir.sqliteUrl('module');
    const moduleRef = await Test.createTestingModule({ imports: [PersistenceModule.forRoot({ databaseUrl, migrate: true })] }).compile();
    const app = await moduleRef.init();
    try {
      const prisma = app.get(PrismaService);
      expect(prisma.provider).toBe('sqlite');
      expect(prisma.databaseUrl).toBe(databaseUrl);
      const repo = app.get(GenerationsRepository);
      await repo.create({ id: 'gen_module', engine: 'sd3_medium', params: { prompt: 'p', negative_prompt: null, seed: 1, steps: 4, guidance: 3, width: 512, height: 512, num_images: 1 } });
      expect((await repo.findById('gen_module'))?.status).toBe('queued');
    } finally {
      await app.close();
    }
  });

  it('takes the database URL as a plain string too', async () => {
    const databaseUrl = dir.sqliteUrl('string');
    const moduleRef = await Test.createTestingModule({ imports: [PersistenceModule.forRoot({ databaseUrl, migrate: true })] }).compile();
    await (await moduleRef.init()).close();
    const plain = await Test.createTestingModule({ imports: [PersistenceModule.forRoot(databaseUrl)] }).compile();
    const app = await plain.init();
    try {
      expect(app.get(PrismaService).databaseUrl).toBe(databaseUrl);
      expect(await app.get(GenerationsRepository).list({ scope: everyOwner, limit: 5 })).toEqual({ items: [], nextCursor: null });
    } finally {
      await app.close();
    }
  });

  it('uses DATABASE_URL when imported without options', async () => {
    const databaseUrl = dir.sqliteUrl('env');
    const previous = process.env.DATABASE_URL;
    process.env.DATABASE_URL = databaseUrl;
    try {
      const moduleRef = await Test.createTestingModule({ imports: [PersistenceModule] }).compile();
      expect(moduleRef.get(PrismaService).databaseUrl).toBe(databaseUrl);
    } finally {
      if (previous === undefined) delete process.env.DATABASE_URL;
      else process.env.DATABASE_URL = previous;
    }
  });
});
