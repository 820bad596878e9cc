import { Inject, Injectable } from '@nestjs/common';
import { REDIS } from '@flexy/config';
import { SUPERVISOR_METRICS_PREFIX } from '@flexy/contracts';
import type Redis from 'ioredis';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';

/** One supervisor's registry as `getMetricsAsJSON` gives it. */
type PublishedMetrics = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;
import { CHECK_TIMEOUT_MS, StatusService, within } from '../status/status.service';

/**
 * /metrics in the Prometheus text format, written by prom-client (which also escapes label values).
 *
 * Sources, chosen so that any gateway process answers with the same series: queue depths from
 * BullMQ, worker states, restarts and device memory from the status each supervisor publishes to
 * Redis, record counts and the last hour's phase means from the database, and the outcome counters
 * and phase histograms from the registries supervisors publish to Redis (observed once, by the
 * supervisor that ran the job; see libs/contracts/src/metrics.ts), aggregated here on each scrape.
 * Only the process and Node metrics are this process's own.
 */
@Injectable()
export class MetricsService {
  private readonly registry = new Registry();
  private readonly queueJobs = this.gauge('flexy_queue_jobs', 'Jobs in the generation queue by state.', ['queue', 'state']);
  private readonly workerUp = this.gauge('flexy_worker_up', 'Workers by published lifecycle state (1 = in that state).', ['worker', 'state']);
  private readonly workerRestarts = new Counter({
    name: 'flexy_worker_restarts',
    help: 'Restarts of each worker process since its supervisor started.',
    labelNames: ['worker'],
    registers: [this.registry],
  });
  private readonly deviceUsed = this.gauge('flexy_worker_device_bytes_used', 'Device memory held by resident engines.', ['worker']);
  private readonly deviceBudget = this.gauge('flexy_worker_device_bytes_budget', 'Device memory budget of the worker.', ['worker']);
  private readonly engineAvailable = this.gauge(
    'flexy_engine_available',
    'Health of each engine on each worker: 1 available, 0 unavailable (its files, load or canary failed; retried with backoff).',
    ['worker', 'engine'],
  );
  private readonly phaseMeans = this.gauge('flexy_generation_phase_seconds_mean', 'Mean duration of each phase over the last hour, by engine.', ['engine', 'phase']);
  private readonly generations = this.gauge('flexy_generations', 'Generations recorded, by engine and status.', ['engine', 'status']);

  constructor(
    private readonly status: StatusService,
    @Inject(REDIS) private readonly redis: Redis,
  ) {
    collectDefaultMetrics({ register: this.registry });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  async render(): Promise<string> {
    const [counts, workers, phases, generations, supervisors] = await Promise.all([
      this.status.queueCounts().catch(() => ({}) as Record<string, number>),
      this.status.workers().catch(() => []),
      this.status.phaseMeans(),
      this.status.generationCounts(),
      // A stalled Redis must not hold the scrape: its series are left out this time.
      within(this.supervisorMetrics(), CHECK_TIMEOUT_MS, 'Redis (supervisor metrics)').catch(() => [] as PublishedMetrics[]),
    ]);
    // Each scrape states what is now: series of workers or states that went away disappear.
    for (const g of [this.queueJobs, this.workerUp, this.deviceUsed, this.deviceBudget, this.engineAvailable, this.phaseMeans, this.generations]) g.reset();
    this.workerRestarts.reset();
    for (const [state, n] of Object.entries(counts)) this.queueJobs.set({ queue: 'generation', state }, n);
    for (const w of workers) {
      this.workerUp.set({ worker: w.id, state: w.state }, 1);
      this.workerRestarts.inc({ worker: w.id }, w.restarts);
      for (const e of w.engines) this.engineAvailable.set({ worker: w.id, engine: e.engine }, e.state === 'unavailable' ? 0 : 1);
      if (w.residency) {
        this.deviceUsed.set({ worker: w.id }, w.residency.device_bytes_used);
        this.deviceBudget.set({ worker: w.id }, w.residency.device_budget_bytes);
      }
    }
    for (const p of phases) this.phaseMeans.set({ engine: p.engine, phase: p.phase }, p.seconds);
    for (const g of generations) this.generations.set({ engine: g.engine, status: g.status }, g._count._all);
    const registries: Registry[] = supervisors.length ? [this.registry, AggregatorRegistry.aggregate(supervisors)] : [this.registry];
    return Registry.merge(registries).metrics();
  }

  /** Every supervisor's published registry; one that cannot be read is skipped, not the others. */
  private async supervisorMetrics(): Promise<PublishedMetrics[]> {
    try {
      const keys = new Set<string>();
      let cursor = '0';
      do {
        const [next, batch] = await this.redis.scan(cursor, 'MATCH', `${SUPERVISOR_METRICS_PREFIX}*`, 'COUNT', 1000);
        batch.forEach((k) => keys.add(k));
        cursor = next;
      } while (cursor !== '0');
      if (keys.size === 0) return [];
      const published: PublishedMetrics[] = [];
      for (const raw of await this.redis.mget(...keys)) {
        if (!raw) continue;
        try {
          published.push(JSON.parse(raw) as PublishedMetrics);
        } catch {
          // skipped, see above
        }
      }
      return published;
    } catch {
      return []; // Redis away: the gateway's own series still answer
    }
  }

  private gauge(name: string, help: string, labelNames: string[]): Gauge {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }
}
