import { Injectable } from '@nestjs/common';
import type { Batch, Prisma, SandboxRun } from './generated/sqlite/client';
import { afterCursor, encodeCursor, ownerWhere, type OwnerScope } from './owner-scope';
import { PrismaService, type DatabaseClient } from './prisma.service';

/** What a sandbox run remembers besides its members: the shared settings and the engines that refused them. */
export interface SandboxRunParams {
  seed: number;
  steps: number | null;
  guidance: number | null;
  width: number | null;
  height: number | null;
  skipped: Array<{ engine: string; error: { code: 'bad_input'; message: string; field: string } }>;
}

export type SandboxRunRecord = Omit<SandboxRun, 'params' | 'engines'> & { params: SandboxRunParams; engines: string[] };

export interface RunListQuery {
  scope: OwnerScope;
  status?: 'running' | 'completed' | 'cancelled';
  createdBefore?: Date;
  createdAfter?: Date;
  cursor?: string | null;
  limit: number;
}

export interface RunPage<T> {
  items: T[];
  nextCursor: string | null;
}

function pageWhere(query: RunListQuery) {
  const where: Prisma.BatchWhereInput & Prisma.SandboxRunWhereInput = { ...ownerWhere(query.scope), status: query.status };
  if (query.createdBefore || query.createdAfter) where.createdAt = { lt: query.createdBefore, gt: query.createdAfter };
  if (query.cursor) where.AND = [afterCursor(query.cursor)];
  return where;
}

function page<T extends { createdAt: Date; id: string }>(rows: T[], limit: number): RunPage<T> {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items, nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
}

/** Finished runs or batches created before `before` that retention has emptied of generations. */
const emptiedBefore = (before: Date) => ({ createdAt: { lt: before }, status: { not: 'running' as const }, generations: { none: {} } });

const newestFirst = [{ createdAt: 'desc' as const }, { id: 'desc' as const }];

/** Sandbox runs: one prompt through several engines, each engine a generation of its own. */
@Injectable()
export class SandboxRunsRepository {
  private readonly db: DatabaseClient;

  constructor(prisma: PrismaService) {
    this.db = prisma.client;
  }

  async create(run: { id: string; prompt: string; params: SandboxRunParams; engines: string[]; apiKeyId: string | null; finished: boolean }): Promise<void> {
    await this.db.sandboxRun.create({
      data: {
        id: run.id,
        prompt: run.prompt,
        params: run.params as unknown as Prisma.InputJsonValue,
        engines: run.engines,
        apiKeyId: run.apiKeyId,
        status: run.finished ? 'completed' : 'running',
        finishedAt: run.finished ? new Date() : null,
      },
    });
  }

  async find(id: string, scope: OwnerScope): Promise<SandboxRunRecord | null> {
    const run = await this.db.sandboxRun.findFirst({ where: { id, ...ownerWhere(scope) } });
    return run ? asRecord(run) : null;
  }

  async list(query: RunListQuery): Promise<RunPage<SandboxRunRecord>> {
    const rows = await this.db.sandboxRun.findMany({ where: pageWhere(query), orderBy: newestFirst, take: query.limit + 1 });
    const p = page(rows, query.limit);
    return { items: p.items.map(asRecord), nextCursor: p.nextCursor };
  }

  /** Marks a running run completed (once); answers whether this call did it. */
  async complete(id: string): Promise<boolean> {
    const { count } = await this.db.sandboxRun.updateMany({ where: { id, status: 'running' }, data: { status: 'completed', finishedAt: new Date() } });
    return count === 1;
  }

  /** Removes up to `limit` finished runs created before `before` whose generations retention has already removed. */
  async purgeEmpty(before: Date, limit: number): Promise<number> {
    const rows = await this.db.sandboxRun.findMany({ where: emptiedBefore(before), orderBy: { createdAt: 'asc' }, take: limit, select: { id: true } });
    if (rows.length === 0) return 0;
    return (await this.db.sandboxRun.deleteMany({ where: { id: { in: rows.map((r) => r.id) }, generations: { none: {} } } })).count;
  }

  /** Runs still marked running, oldest first (for the reconciler). */
  async running(limit: number): Promise<string[]> {
    const rows = await this.db.sandboxRun.findMany({ where: { status: 'running' }, orderBy: { createdAt: 'asc' }, take: limit, select: { id: true } });
    return rows.map((r) => r.id);
  }
}

function asRecord(run: SandboxRun): SandboxRunRecord {
  return { ...run, params: run.params as unknown as SandboxRunParams, engines: run.engines as unknown as string[] };
}

/** Batches: prompts × engines × seeds at the lowest priority. */
@Injectable()
export class BatchesRepository {
  private readonly db: DatabaseClient;

  constructor(prisma: PrismaService) {
    this.db = prisma.client;
  }

  async create(batch: { id: string; itemCount: number; apiKeyId: string | null }): Promise<void> {
    await this.db.batch.create({ data: { ...batch, status: 'running' } });
  }

  find(id: string, scope: OwnerScope): Promise<Batch | null> {
    return this.db.batch.findFirst({ where: { id, ...ownerWhere(scope) } });
  }

  async list(query: RunListQuery): Promise<RunPage<Batch>> {
    return page(await this.db.batch.findMany({ where: pageWhere(query), orderBy: newestFirst, take: query.limit + 1 }), query.limit);
  }

  /** Marks a running batch completed (once); answers whether this call did it. */
  async complete(id: string): Promise<boolean> {
    const { count } = await this.db.batch.updateMany({ where: { id, status: 'running' }, data: { status: 'completed', finishedAt: new Date() } });
    return count === 1;
  }

  async markCancelled(id: string): Promise<void> {
    await this.db.batch.updateMany({ where: { id, status: { in: ['queued', 'running'] } }, data: { status: 'cancelled', cancelledAt: new Date() } });
  }

  /** Removes up to `limit` finished batches created before `before` whose generations retention has already removed. */
  async purgeEmpty(before: Date, limit: number): Promise<number> {
    const rows = await this.db.batch.findMany({ where: emptiedBefore(before), orderBy: { createdAt: 'asc' }, take: limit, select: { id: true } });
    if (rows.length === 0) return 0;
    return (await this.db.batch.deleteMany({ where: { id: { in: rows.map((r) => r.id) }, generations: { none: {} } } })).count;
  }

  /** Batches still marked running, oldest first (for the reconciler). */
  async running(limit: number): Promise<string[]> {
    const rows = await this.db.batch.findMany({ where: { status: 'running' }, orderBy: { createdAt: 'asc' }, take: limit, select: { id: true } });
    return rows.map((r) => r.id);
  }
}
