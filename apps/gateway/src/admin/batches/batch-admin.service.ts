import { ConflictException, Injectable, NotFoundException } from '@nestjs/common';
import { dashboardPrincipal } from '@flexy/generations';
import { PrismaService } from '@flexy/persistence';
import type { BatchDetail, BatchSummary } from '../admin.dto';
import { GatewayServices } from '../gateway-services';
import { listItem } from '../jobs/job-admin.service';

const PAGE_SIZE = 50;
const MAX_ITEMS_SHOWN = 500;

function emptyCounts(): BatchSummary['counts'] {
  return { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
}

/** Batches as the database holds them: progress from their member generations, per-item results, cancel. */
@Injectable()
export class BatchAdminService {
  constructor(
    private readonly prisma: PrismaService,
    private readonly gateway: GatewayServices,
  ) {}

  async any(): Promise<boolean> {
    return (await this.prisma.client.batch.findFirst({ select: { id: true } })) !== null;
  }

  async list(): Promise<BatchSummary[]> {
    const batches = await this.prisma.client.batch.findMany({ orderBy: [{ createdAt: 'desc' }, { id: 'desc' }], take: PAGE_SIZE });
    if (!batches.length) return [];
    const grouped = await this.prisma.client.generation.groupBy({
      by: ['batchId', 'status'],
      where: { batchId: { in: batches.map((b) => b.id) } },
      _count: { _all: true },
    });
    return batches.map((b) => {
      const counts = emptyCounts();
      for (const g of grouped) if (g.batchId === b.id) counts[g.status] = g._count._all;
      return summary(b, counts);
    });
  }

  async detail(id: string): Promise<BatchDetail> {
    const b = await this.prisma.client.batch.findUnique({ where: { id } });
    if (!b) throw new NotFoundException(`batch ${id} not found`);
    const items = await this.prisma.client.generation.findMany({
      where: { batchId: id },
      orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
      take: MAX_ITEMS_SHOWN,
      include: { apiKey: { select: { id: true, name: true, prefix: true } } },
    });
    const grouped = await this.prisma.client.generation.groupBy({ by: ['status'], where: { batchId: id }, _count: { _all: true } });
    const counts = emptyCounts();
    for (const g of grouped) counts[g.status] = g._count._all;
    return { ...summary(b, counts), items: items.map(listItem) };
  }

  /** The same cancel as DELETE /v1/batches/:id: every unfinished item stops; finished ones keep their results. */
  async cancel(id: string): Promise<{ cancelled: number; cancelling: number }> {
    const b = await this.prisma.client.batch.findUnique({ where: { id }, select: { status: true } });
    if (!b) throw new NotFoundException(`batch ${id} not found`);
    if (b.status === 'completed' || b.status === 'cancelled') throw new ConflictException(`batch ${id} is already ${b.status}`);
    const r = await this.gateway.lifecycle.cancelBatch(dashboardPrincipal('admin'), id);
    return { cancelled: r.cancelled, cancelling: r.cancelling };
  }
}

function summary(
  b: { id: string; status: string; itemCount: number; createdAt: Date; finishedAt: Date | null; cancelledAt: Date | null },
  counts: BatchSummary['counts'],
): BatchSummary {
  const done = counts.succeeded + counts.failed + counts.cancelled;
  return {
    id: b.id,
    status: b.status === 'running' && b.itemCount > 0 && done >= b.itemCount ? 'completed' : b.status,
    itemCount: b.itemCount,
    counts,
    createdAt: b.createdAt.toISOString(),
    finishedAt: b.finishedAt?.toISOString() ?? null,
    cancelledAt: b.cancelledAt?.toISOString() ?? null,
  };
}
