import { Injectable } from '@nestjs/common';
import { ACTIVE_STATUSES, SEED_RANGE, TERMINAL_STATUSES } from '@flexy/contracts';
import { GENERATION_PARAM_NAMES, GENERATION_PARAMS, type GenerationParams } from '@flexy/engines';
import type { Generation, GenerationImage, GenerationOrigin, GenerationStatus, WeightsKind } from './generated/sqlite/client';
import { Prisma } from './generated/sqlite/client';
import { afterCursor, encodeCursor, ownerWhere, type OwnerScope } from './owner-scope';
import { PrismaService, type DatabaseClient } from './prisma.service';

export type GenerationWithImages = Generation & { images: GenerationImage[] };

export interface CreateGenerationInput {
  /** Also the BullMQ job id. */
  id: string;
  engine: string;
  /** One column each (GENERATION_PARAMS names it); the seed within SEED_RANGE. */
  params: GenerationParams;
  origin?: GenerationOrigin;
  sandboxRunId?: string | null;
  batchId?: string | null;
  apiKeyId?: string | null;
  webhookUrl?: string | null;
}

/** Stage timings in milliseconds; fractions are rounded, missing stages stay null. */
export interface GenerationTimings {
  queueWaitMs?: number | null;
  loadMs?: number | null;
  textEncodeMs?: number | null;
  denoiseMs?: number | null;
  decodeMs?: number | null;
  encodeStoreMs?: number | null;
  totalMs?: number | null;
}

export interface GenerationImageInput {
  index: number;
  path: string;
  format: string;
  width: number;
  height: number;
  bytes: number;
  sha256: string;
}

export interface GenerationSuccess {
  timings: GenerationTimings;
  weights: WeightsKind;
  modelRevision?: string | null;
  images: GenerationImageInput[];
}

export interface GenerationFailure {
  code: string;
  message: string;
  /** The request field at fault, for input errors. */
  field?: string | null;
}

/**
 * What a status change did: `updated`; `unchanged` because the record is already terminal
 * (succeeded, failed, cancelled), which is the normal outcome of a repeated delivery; or
 * `not-found`.
 */
export type TransitionOutcome = 'updated' | 'unchanged' | 'not-found';

export interface ListGenerationsQuery {
  /** Whose generations: one owner's, or every owner's (admin). Deleted ones are never listed. */
  scope: OwnerScope;
  status?: GenerationStatus;
  engine?: string;
  createdBefore?: Date;
  createdAfter?: Date;
  /** `nextCursor` of the previous page. */
  cursor?: string | null;
  /** 1 … 100, default 20. */
  limit?: number;
}

/** What retention removes: a record and the files of its images. */
export interface ExpiredGeneration {
  id: string;
  imagePaths: string[];
}

export interface GenerationPage {
  /** Newest first. */
  items: GenerationWithImages[];
  /** Pass back as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
}

const ACTIVE: GenerationStatus[] = [...ACTIVE_STATUSES];
const TERMINAL: GenerationStatus[] = [...TERMINAL_STATUSES];
export const MAX_PAGE_SIZE = 100;
const DEFAULT_PAGE_SIZE = 20;
const withImages = { images: { orderBy: { index: 'asc' } } } satisfies Prisma.GenerationInclude;

/**
 * Generation records. Every result write is keyed by the generation (job) id and only moves a
 * record out of queued/running, so at-least-once job delivery cannot duplicate or overwrite a
 * finished result.
 */
@Injectable()
export class GenerationsRepository {
  private readonly db: DatabaseClient;
  private readonly provider: PrismaService['provider'];

  constructor(prisma: PrismaService) {
    this.db = prisma.client;
    this.provider = prisma.provider;
  }

  /** Records a new request with status `queued`. */
  async create(input: CreateGenerationInput): Promise<GenerationWithImages> {
    // A new record has no images yet: no second query to fetch them.
    return { ...(await this.db.generation.create({ data: toRow(input) })), images: [] };
  }

  /**
   * Records many requests (status `queued`) in one multi-row INSERT. All or none: one bad row (a
   * duplicate id, an unknown key) rejects the statement.
   *
   * Raw SQL on purpose: this is the gateway's hot path, and Prisma's createMany compiles a query
   * plan per call and maps every row (about 0.5 ms a row on the 2-core test machine) where the
   * statement itself costs under 0.1 ms a row. Columns and values are those of `toRow`, the same
   * row Prisma's `create` writes; the database fills in the rest.
   */
  async createMany(inputs: CreateGenerationInput[]): Promise<void> {
    if (inputs.length === 0) return;
    const createdAt = new Date();
    const rows: Record<string, unknown>[] = inputs.map((input) => ({ ...toRow(input), createdAt }));
    const columns = Object.keys(rows[0]);
    const cell = (column: string, value: unknown) => {
      // PostgreSQL keeps these columns in enum types; a text parameter needs the cast. SQLite stores text.
      const enumType = this.provider === 'postgresql' ? ENUM_COLUMN_TYPES[column] : undefined;
      return enumType ? Prisma.sql`CAST(${value} AS ${Prisma.raw(`"${enumType}"`)})` : Prisma.sql`${value}`;
    };
    const values = rows.map((row) => Prisma.sql`(${Prisma.join(columns.map((c) => cell(c, row[c])))})`);
    await this.db.$executeRaw(
      Prisma.sql`INSERT INTO "Generation" (${Prisma.raw(columns.map((c) => `"${c}"`).join(', '))}) VALUES ${Prisma.join(values)}`,
    );
  }

  /** Any record by id, deleted or not: for the service's own bookkeeping, never for an answer to a client. */
  findById(id: string): Promise<GenerationWithImages | null> {
    return this.db.generation.findUnique({ where: { id }, include: withImages });
  }

  /** A record its owner (or an admin) may see: another owner's, or a deleted one, is null. */
  findVisible(id: string, scope: OwnerScope): Promise<GenerationWithImages | null> {
    return this.db.generation.findFirst({ where: { id, deletedAt: null, ...ownerWhere(scope) }, include: withImages });
  }

  /** How many members of a sandbox run or batch are in each status. */
  async statusCounts(group: { sandboxRunId: string } | { batchId: string }): Promise<Record<GenerationStatus, number>> {
    const grouped = await this.db.generation.groupBy({ by: ['status'], where: group, _count: { _all: true } });
    const counts = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const g of grouped) counts[g.status] = g._count._all;
    return counts;
  }

  /**
   * Queued or running records created before `before`, in id order after `after`, at most `take`
   * (the reconciler's scan: every promise the database holds that Redis should be delivering).
   */
  unfinished(before: Date, options: { after?: string; take: number }): Promise<GenerationWithImages[]> {
    return this.db.generation.findMany({
      where: { status: { in: ACTIVE }, createdAt: { lt: before }, ...(options.after ? { id: { gt: options.after } } : {}) },
      orderBy: { id: 'asc' },
      take: options.take,
      include: withImages,
    });
  }

  /** Ids of the members of a sandbox run or batch that are still queued or running. */
  async activeIds(group: { sandboxRunId: string } | { batchId: string }): Promise<string[]> {
    const rows = await this.db.generation.findMany({ where: { ...group, status: { in: ACTIVE } }, select: { id: true } });
    return rows.map((r) => r.id);
  }

  /** Members of a sandbox run or batch, with their images, in id order, one page at a time. */
  members(group: { sandboxRunId: string } | { batchId: string }, options: { after?: string; take?: number } = {}): Promise<GenerationWithImages[]> {
    return this.db.generation.findMany({
      where: { ...group, ...(options.after ? { id: { gt: options.after } } : {}) },
      orderBy: { id: 'asc' },
      take: options.take,
      include: withImages,
    });
  }

  /**
   * Hides a record from every listing and read, and answers the paths of its images for the caller
   * to remove. Repeating it changes nothing. Null when there is no such visible-or-deleted record of
   * this owner; 'active' when it has not finished, unless `evenIfActive` (its cancel is under way).
   */
  async softDelete(id: string, scope: OwnerScope, options: { evenIfActive?: boolean } = {}): Promise<{ imagePaths: string[] } | 'active' | null> {
    const g = await this.db.generation.findFirst({ where: { id, ...ownerWhere(scope) }, include: withImages });
    if (!g) return null;
    if (ACTIVE.includes(g.status) && !options.evenIfActive) return 'active';
    if (!g.deletedAt) await this.db.generation.updateMany({ where: { id, deletedAt: null }, data: { deletedAt: new Date() } });
    return { imagePaths: g.images.map((i) => i.path) };
  }

  /** Up to `limit` finished records created before `cutoff`, oldest first, with their image files. */
  async expired(cutoff: Date, limit: number): Promise<ExpiredGeneration[]> {
    const rows = await this.db.generation.findMany({
      where: { createdAt: { lt: cutoff }, status: { in: TERMINAL } },
      orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
      take: limit,
      select: { id: true, images: { select: { path: true } } },
    });
    return rows.map((r) => ({ id: r.id, imagePaths: r.images.map((i) => i.path) }));
  }

  /** Removes records for good (their images and webhook attempts go with them); only finished ones. */
  async purge(ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    const { count } = await this.db.generation.deleteMany({ where: { id: { in: ids }, status: { in: TERMINAL } } });
    return count;
  }

  /** A worker took the job: counts the attempt. Also valid for a re-delivered running job. */
  markRunning(id: string, workerId: string): Promise<TransitionOutcome> {
    return this.transition(this.db, id, {
      status: 'running',
      workerId,
      startedAt: new Date(),
      attempts: { increment: 1 },
    });
  }

  /** Back in the queue for a retry (worker lost, out of memory); never undoes a terminal state. */
  markQueued(id: string): Promise<TransitionOutcome> {
    return this.transition(this.db, id, { status: 'queued', workerId: null });
  }

  /**
   * Stores the result and its images in one transaction. A repeated call for the same id finds
   * the record terminal and changes nothing: no second record, no second set of images.
   */
  async markSucceeded(id: string, result: GenerationSuccess): Promise<TransitionOutcome> {
    const t = result.timings;
    const store = async (tx: Prisma.TransactionClient): Promise<TransitionOutcome> => {
      // The conditional update comes first: it takes the write lock (SQLite) or the row lock
      // (PostgreSQL), so concurrent calls serialise here and only one sees status active.
      const outcome = await this.transition(tx, id, {
        status: 'succeeded',
        finishedAt: new Date(),
        weights: result.weights,
        modelRevision: result.modelRevision ?? null,
        queueWaitMs: ms(t.queueWaitMs),
        loadMs: ms(t.loadMs),
        textEncodeMs: ms(t.textEncodeMs),
        denoiseMs: ms(t.denoiseMs),
        decodeMs: ms(t.decodeMs),
        encodeStoreMs: ms(t.encodeStoreMs),
        totalMs: ms(t.totalMs),
        errorCode: null,
        errorMessage: null,
        errorField: null,
      });
      if (outcome === 'updated' && result.images.length > 0) {
        await tx.generationImage.createMany({
          data: result.images.map((image) => ({
            generationId: id,
            index: image.index,
            path: image.path,
            format: image.format,
            width: image.width,
            height: image.height,
            bytes: image.bytes,
            sha256: image.sha256,
          })),
        });
      }
      return outcome;
    };
    // Room for SQLite's busy wait when another process holds the write lock.
    return this.db.$transaction(store, { maxWait: 10_000, timeout: 15_000 });
  }

  markFailed(id: string, error: GenerationFailure): Promise<TransitionOutcome> {
    return this.transition(this.db, id, {
      status: 'failed',
      finishedAt: new Date(),
      errorCode: error.code,
      errorMessage: error.message,
      errorField: error.field ?? null,
    });
  }

  markCancelled(id: string): Promise<TransitionOutcome> {
    return this.transition(this.db, id, { status: 'cancelled', finishedAt: new Date() });
  }

  /** Newest first, filtered, paginated by an opaque keyset cursor (stable under inserts). */
  async list(query: ListGenerationsQuery): Promise<GenerationPage> {
    const limit = Math.min(Math.max(Math.trunc(query.limit ?? DEFAULT_PAGE_SIZE), 1), MAX_PAGE_SIZE);
    const where: Prisma.GenerationWhereInput = {
      ...ownerWhere(query.scope),
      deletedAt: null,
      status: query.status,
      engine: query.engine,
    };
    if (query.createdBefore || query.createdAfter) where.createdAt = { lt: query.createdBefore, gt: query.createdAfter };
    if (query.cursor) where.AND = [afterCursor(query.cursor)];
    const rows = await this.db.generation.findMany({
      where,
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: limit + 1,
      include: withImages,
    });
    const items = rows.slice(0, limit);
    const last = items[items.length - 1];
    return { items, nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
  }

  /** Applies `data` only while the record is queued or running. */
  private async transition(
    db: Pick<DatabaseClient, 'generation'>,
    id: string,
    data: Prisma.GenerationUpdateManyMutationInput,
  ): Promise<TransitionOutcome> {
    const { count } = await db.generation.updateMany({ where: { id, status: { in: ACTIVE } }, data });
    if (count === 1) return 'updated';
    const exists = await db.generation.count({ where: { id } });
    return exists ? 'unchanged' : 'not-found';
  }
}

function ms(value: number | null | undefined): number | null {
  return value === null || value === undefined || !Number.isFinite(value) ? null : Math.round(value);
}

function checkedSeed(value: number | bigint): bigint {
  const seed = BigInt(value);
  if (seed < BigInt(SEED_RANGE.min) || seed > BigInt(SEED_RANGE.max)) throw new RangeError(`seed must be within ${SEED_RANGE.min}…${SEED_RANGE.max}, got ${seed}`);
  return seed;
}

/** Columns of `toRow` whose PostgreSQL type is an enum of the schema. */
const ENUM_COLUMN_TYPES: Record<string, string> = { status: 'GenerationStatus', origin: 'GenerationOrigin' };

/** The parameters as record columns; the seed as a 64-bit integer (it exceeds a signed 32-bit column). */
function paramColumns(params: GenerationParams): Record<string, unknown> {
  const columns: Record<string, unknown> = {};
  for (const name of GENERATION_PARAM_NAMES) columns[GENERATION_PARAMS[name].column] = params[name];
  columns[GENERATION_PARAMS.seed.column] = checkedSeed(params.seed);
  return columns;
}

/** A record's parameters, as the API and the worker name them. */
export function paramsOf(g: Generation): GenerationParams {
  const row = g as unknown as Record<string, unknown>;
  const params = Object.fromEntries(GENERATION_PARAM_NAMES.map((name) => [name, row[GENERATION_PARAMS[name].column]]));
  return { ...params, seed: Number(g.seed) } as GenerationParams;
}

function toRow(input: CreateGenerationInput): Prisma.GenerationUncheckedCreateInput {
  return {
    id: input.id,
    status: 'queued' as const,
    engine: input.engine,
    ...(paramColumns(input.params) as Pick<Prisma.GenerationUncheckedCreateInput, 'prompt' | 'seed' | 'steps' | 'guidance' | 'width' | 'height' | 'numImages'>),
    origin: input.origin ?? 'interactive',
    sandboxRunId: input.sandboxRunId ?? null,
    batchId: input.batchId ?? null,
    apiKeyId: input.apiKeyId ?? null,
    webhookUrl: input.webhookUrl ?? null,
  };
}
