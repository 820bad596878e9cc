import { InjectQueue } from '@nestjs/bullmq';
import { Inject, Injectable } from '@nestjs/common';
import { QueueName, readWorkerStatuses, type WorkerStatus } from '@flexy/contracts';
import { APP_CONFIG, REDIS, type AppConfig } from '@flexy/config';
import { ENGINE_CATALOG, ENGINE_IDS, type EngineId } from '@flexy/engines';
import { isBuiltSnapshot, snapshotState } from '@flexy/hub';
import { PrismaService } from '@flexy/persistence';
import type { Queue } from 'bullmq';
import type Redis from 'ioredis';

export const QUEUE_STATES = ['waiting', 'prioritized', 'active', 'delayed', 'failed', 'completed'] as const;

/**
 * How long one readiness check (and each Redis read behind /metrics and /v1/engines) may take. A
 * stalled Redis or database never answers: the probe must, and say which part did not.
 */
export const CHECK_TIMEOUT_MS = 1000;

export class CheckTimeout extends Error {
  constructor(what: string, ms: number) {
    super(`${what} did not answer within ${ms} ms`);
  }
}

/** `promise`, or a CheckTimeout after `ms` (the work itself is not cancelled; its answer is ignored). */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CheckTimeout(what, ms)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One check's outcome, as /health/ready reports it. */
export interface CheckResult {
  ok: boolean;
  ms: number;
  error: string | null;
}

/** An engine's health across the workers that report it. */
export interface EngineHealthView {
  /** `available` on at least one worker; `unavailable` on every worker that has it; `unknown` when no worker reports it. */
  state: 'available' | 'unavailable' | 'unknown';
  available_on: string[];
  unavailable_on: Array<{ worker: string; reason: string | null; retry_at: number | null }>;
}

/** Live state gathered from Redis (queues, published worker status) and the database. */
@Injectable()
export class StatusService {
  constructor(
    @InjectQueue(QueueName.Generation) private readonly queue: Queue,
    @Inject(REDIS) private readonly redis: Redis,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly prisma: PrismaService,
  ) {}

  async workers(): Promise<WorkerStatus[]> {
    return (await within(readWorkerStatuses(this.redis), CHECK_TIMEOUT_MS, 'Redis (worker status)')).sort((a, b) => a.id.localeCompare(b.id));
  }

  async queueCounts(): Promise<Record<string, number>> {
    return within(this.queue.getJobCounts(...QUEUE_STATES), CHECK_TIMEOUT_MS, 'Redis (queue counts)');
  }

  /** Readiness: each check on its own clock, so one that hangs costs its own timeout and no more. */
  async readiness(): Promise<{ redis: CheckResult; database: CheckResult; workers: CheckResult & { statuses: WorkerStatus[] } }> {
    const timed = async <T>(what: string, run: () => Promise<T>): Promise<CheckResult & { value: T | null }> => {
      const started = performance.now();
      try {
        const value = await within(run(), CHECK_TIMEOUT_MS, what);
        return { ok: true, ms: Math.round(performance.now() - started), error: null, value };
      } catch (err) {
        return { ok: false, ms: Math.round(performance.now() - started), error: (err as Error).message, value: null };
      }
    };
    const [redis, database, workers] = await Promise.all([
      timed('Redis', () => this.redis.ping()),
      timed('the database', () => this.prisma.client.$queryRawUnsafe('SELECT 1')),
      timed('Redis (worker status)', () => readWorkerStatuses(this.redis)),
    ]);
    const statuses = (workers.value ?? []).sort((a, b) => a.id.localeCompare(b.id));
    const serving = statuses.filter((w) => w.state === 'ready' || w.state === 'busy');
    const workersCheck = workers.ok && serving.length === 0 ? { ...workers, ok: false, error: 'no worker is ready' } : workers;
    return {
      redis: { ok: redis.ok, ms: redis.ms, error: redis.error },
      database: { ok: database.ok, ms: database.ms, error: database.error },
      workers: { ok: workersCheck.ok, ms: workersCheck.ms, error: workersCheck.error, statuses },
    };
  }

  /** Each engine's health across the workers that report it (per-engine health: one bad engine is not a bad worker). */
  static engineHealth(workers: WorkerStatus[]): Record<string, EngineHealthView> {
    const out: Record<string, EngineHealthView> = {};
    for (const id of ENGINE_IDS) {
      const view: EngineHealthView = { state: 'unknown', available_on: [], unavailable_on: [] };
      for (const w of workers) {
        const e = w.engines.find((x) => x.engine === id);
        if (!e) continue;
        if (e.state === 'unavailable') view.unavailable_on.push({ worker: w.id, reason: e.reason, retry_at: e.retry_at });
        else view.available_on.push(w.id);
      }
      view.state = view.available_on.length ? 'available' : view.unavailable_on.length ? 'unavailable' : 'unknown';
      out[id] = view;
    }
    return out;
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
    const health = StatusService.engineHealth(workers);
    return ENGINE_IDS.map((id, i) => {
      const spec = ENGINE_CATALOG[id];
      const snapshot = snapshotState(spec, this.config.modelsDir);
      const servedBy = workers.filter((w) => w.engines.some((e) => e.engine === id && e.state !== 'unavailable'));
      const residentOn = workers.filter((w) => w.residency?.engines.some((e) => e.engine === id && e.location === 'device'));
      const samples = recent[i].filter((r) => r.steps > 0).map((r) => r.denoiseMs! / 1000 / r.steps);
      // The workers' word first: an engine every worker reports unavailable is not available, whatever is on disk here.
      const available =
        health[id].state === 'unknown' ? snapshot.state === 'verified' || isBuiltSnapshot(snapshot.state) : health[id].state === 'available';
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
        health: health[id],
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
