export { PersistenceModule } from './persistence.module';
export {
  PrismaService,
  PERSISTENCE_OPTIONS,
  createDatabaseClient,
  configureSqlite,
  type DatabaseClient,
  type PersistenceOptions,
} from './prisma.service';
export {
  GenerationsRepository,
  paramsOf,
  MAX_PAGE_SIZE,
  type ExpiredGeneration,
  type CreateGenerationInput,
  type GenerationFailure,
  type GenerationImageInput,
  type GenerationPage,
  type GenerationSuccess,
  type GenerationTimings,
  type GenerationWithImages,
  type ListGenerationsQuery,
  type TransitionOutcome,
} from './generations.repository';
export { SandboxRunsRepository, BatchesRepository, type SandboxRunParams, type SandboxRunRecord, type RunListQuery, type RunPage } from './runs.repository';
export { InvalidCursorError, everyOwner, ownerOf, ownerWhere, type OwnerScope } from './owner-scope';
export { applyMigrations, schemaDrift, pendingSchemaChanges, type MigrationReport } from './migrations';
export { resolveDatabaseUrl, databaseProvider, type DatabaseProvider } from './database-tools';
export { ApiKeyRole, GenerationOrigin, GenerationStatus, RunStatus, WeightsKind } from './generated/sqlite/enums';
export type {
  ApiKey,
  Batch,
  Generation,
  GenerationImage,
  IdempotencyRecord,
  SandboxRun,
  WebhookDelivery,
} from './generated/sqlite/client';
