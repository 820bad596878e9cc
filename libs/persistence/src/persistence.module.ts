import { Global, Module, type DynamicModule } from '@nestjs/common';
import { GenerationsRepository } from './generations.repository';
import { BatchesRepository, SandboxRunsRepository } from './runs.repository';
import { PERSISTENCE_OPTIONS, PrismaService, type PersistenceOptions } from './prisma.service';

/**
 * The database for the whole application. Imported bare it uses DATABASE_URL (or the embedded
 * SQLite file); `forRoot` takes the URL, or options, explicitly.
 */
@Global()
@Module({
  providers: [PrismaService, GenerationsRepository, SandboxRunsRepository, BatchesRepository],
  exports: [PrismaService, GenerationsRepository, SandboxRunsRepository, BatchesRepository],
})
export class PersistenceModule {
  static forRoot(databaseUrlOrOptions: string | PersistenceOptions = {}): DynamicModule {
    const options = typeof databaseUrlOrOptions === 'string' ? { databaseUrl: databaseUrlOrOptions } : databaseUrlOrOptions;
    return {
      module: PersistenceModule,
      global: true,
      providers: [{ provide: PERSISTENCE_OPTIONS, useValue: options }],
    };
  }
}
