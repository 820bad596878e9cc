import { InjectQueue } from '@nestjs/bullmq';
import { Inject, Injectable } from '@nestjs/common';
import { QueueName, readWorkerStatuses, type WorkerStatus } from '@flexy/contracts';
import { APP_CONFIG, REDIS, reportQueueErrors, type AppConfig } from '@flexy/config';
import { ENGINE_CATALOG, ENGINE_IDS, type EngineId } from '@flexy/engines';
import { isBuiltSnapshot, snapshotState } from '@flexy/hub';
import { PrismaService } from '@flexy/persistence';
import type { Queue } from 'bullmq';
import type Redis from 'ioredis';

export const QUEUE_STATES = ['waiting', 'prioritized', 'active', 'delayed', 'failed', 'completed'] as const;

/** Live state gathered from Redis (queues, published worker status) and the database. */
@Injectable()
export class StatusService {
  constructor(
    @InjectQueue(QueueName.Generation) private readonly queue: Queue,
    @Inject(REDIS) private readonly redis: Redis,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly prisma: PrismaService,
  ) {
    // The gateway's one generation queue: its connection errors go to the outage reporter (once per outage).
    reportQueueErrors(queue, 'queue generation');
  }

  async workers(): Promise<WorkerStatus[]> {
    return (await readWorkerStatuses(this.redis)).sort((a, b) => a.id.localeCompare(b.id));
  }

  async queueCounts(): Promise<Record<string, number>> {
    return this.queue.getJobCounts(...QUEUE_STATES);
  }

  async databaseOk(): Promise<boolean> {
    return this.prisma.client.$queryRawUnsafe('SELECT 1').then(
      () => true,
      () => false,
    );
  }

  /** The catalog with what is live: local weights, which workers have it resident, queue depth, typical speed. */
  async engines() {
    const [workers, queued, recent] = await Promise.all([
      this.workers().catch(() => [] as WorkerStatus[]),
      this.prisma.client.generation.groupBy({ by: ['engine'], where: { status: { in: ['queued', 'running'] } }, _count: { _all: true } }),
      Promise.all(
        ENGINE_IDS.map((engine) =>
          this.prisma.client.generation.findMany({
            where: { engine, status: 'succeeded', denoiseMs: { not: null } },
            orderBy: { createdAt: 'desc' },
            take: 50,
            select: { denoiseMs: true, steps: true, weights: true },
          }),
        ),
      ),
    ]);
    return ENGINE_IDS.map((id, i) => {
      const spec = ENGINE_CATALOG[id];
      const snapshot = snapshotState(spec, this.config.modelsDir);
      const servedBy = workers.filter((w) => w.engines.some((e) => e.engine === id));
      const residentOn = workers.filter((w) => w.residency?.engines.some((e) => e.engine === id && e.location === 'device'));
      const samples = recent[i].filter((r) => r.steps > 0).map((r) => r.denoiseMs! / 1000 / r.steps);
      const available = servedBy.length > 0 || snapshot.state === 'verified' || isBuiltSnapshot(snapshot.state);
      return {
        id,
        label: spec.label,
        pipeline: spec.pipelineClass,
        hub_repo: spec.hubRepo,
        revision: spec.revision,
        license: spec.license,
        defaults: spec.defaults,
        limits: spec.limits,
        available,
        weights: { state: snapshot.state, detail: snapshot.detail, fix: available ? null : snapshot.fixCommand },
        workers: servedBy.map((w) => w.id),
        resident_on: residentOn.map((w) => w.id),
        queue_depth: queued.find((q) => q.engine === id)?._count._all ?? 0,
        typical_s_per_step: samples.length ? Number(median(samples).toFixed(4)) : null,
      };
    });
  }

  /** Mean phase durations per engine over recent successes, for /metrics. */
  async phaseMeans(): Promise<Array<{ engine: EngineId; phase: string; seconds: number; count: number }>> {
    const rows = await this.prisma.client.generation.groupBy({
      by: ['engine'],
      where: { status: 'succeeded', finishedAt: { gte: new Date(Date.now() - 3600_000) } },
      _avg: { queueWaitMs: true, loadMs: true, textEncodeMs: true, denoiseMs: true, decodeMs: true, encodeStoreMs: true, totalMs: true },
      _count: { _all: true },
    });
    return rows.flatMap((r) =>
      Object.entries(r._avg).map(([key, ms]) => ({
        engine: r.engine as EngineId,
        phase: key.replace(/Ms$/, '').replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`),
        seconds: (ms ?? 0) / 1000,
        count: r._count._all,
      })),
    );
  }

  async generationCounts() {
    return this.prisma.client.generation.groupBy({ by: ['engine', 'status'], _count: { _all: true } });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
