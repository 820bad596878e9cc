import { Inject, Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { APP_CONFIG, REDIS, type AppConfig } from '@flexy/config';
import {
  GENERATION_PHASES,
  isTerminalStatus,
  PHASE_SECONDS_BUCKETS,
  SUPERVISOR_METRICS_TTL_S,
  supervisorMetricsKey,
  type GenerationPhase,
} from '@flexy/contracts';
import { GenerationsRepository } from '@flexy/persistence';
import type Redis from 'ioredis';
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';

const PUBLISH_EVERY_MS = 5000;
/** On shutdown the last publish gets this long (Redis may be away). */
const FINAL_PUBLISH_MS = 2000;

/** The record's column of each phase. */
const PHASE_COLUMN: Record<GenerationPhase, 'queueWaitMs' | 'loadMs' | 'textEncodeMs' | 'denoiseMs' | 'decodeMs' | 'encodeStoreMs' | 'totalMs'> = {
  queue_wait: 'queueWaitMs',
  load: 'loadMs',
  text_encode: 'textEncodeMs',
  denoise: 'denoiseMs',
  decode: 'decodeMs',
  encode_store: 'encodeStoreMs',
  total: 'totalMs',
};

/**
 * This supervisor's metrics: the outcome of each generation job it ran and the duration of each of
 * its phases, plus its own process metrics. Observed here, once per job, because the supervisor that
 * ran a job is the one place that sees it end exactly once; published to Redis (see
 * libs/contracts/src/metrics.ts) so that every gateway process serves the same sums. Series carry a
 * `supervisor` label: each supervisor's counters reset only when that supervisor restarts.
 */
@Injectable()
export class GenerationMetrics implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(GenerationMetrics.name);
  readonly registry = new Registry();
  private readonly outcomes = new Counter({
    name: 'flexy_generation_outcomes_total',
    help: 'Generation jobs that ended on a supervisor, by engine, status and error code ("" unless failed).',
    labelNames: ['engine', 'status', 'error_code'],
    registers: [this.registry],
  });
  private readonly phases = new Histogram({
    name: 'flexy_generation_phase_seconds',
    help: 'Duration of each phase of the generations that succeeded, by engine.',
    labelNames: ['engine', 'phase'],
    buckets: [...PHASE_SECONDS_BUCKETS],
    registers: [this.registry],
  });
  private timer: NodeJS.Timeout | null = null;
  private publishing: Promise<void> | null = null;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(REDIS) private readonly redis: Redis,
    private readonly generations: GenerationsRepository,
  ) {}

  onModuleInit(): void {
    this.registry.setDefaultLabels({ supervisor: this.config.supervisorHostId });
    collectDefaultMetrics({ register: this.registry, prefix: 'flexy_supervisor_' });
    this.timer = setInterval(() => void this.publish(), PUBLISH_EVERY_MS);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    // The last outcomes, for the gateways to serve until the key expires.
    await Promise.race([this.publish(), new Promise((resolve) => setTimeout(resolve, FINAL_PUBLISH_MS).unref())]);
  }

  /**
   * A generation job's handler is done with `generationId` (it settled it, handed it back or
   * failed an attempt). Counted when the record ended during this run (`since`): a retried attempt
   * leaves it queued, and a redelivered job finds it ended before.
   */
  async jobEnded(generationId: string, since: Date): Promise<void> {
    const g = await this.generations.findById(generationId);
    if (!g || !isTerminalStatus(g.status) || !g.finishedAt || g.finishedAt < since) return;
    this.outcomes.inc({ engine: g.engine, status: g.status, error_code: g.status === 'failed' ? (g.errorCode ?? 'internal') : '' });
    if (g.status !== 'succeeded') return;
    for (const phase of GENERATION_PHASES) {
      const ms = g[PHASE_COLUMN[phase]];
      if (ms !== null) this.phases.observe({ engine: g.engine, phase }, ms / 1000);
    }
  }

  /** One publish at a time: while Redis is away a write waits for the reconnect, and rounds must not pile up. */
  publish(): Promise<void> {
    this.publishing ??= this.publishNow().finally(() => {
      this.publishing = null;
    });
    return this.publishing;
  }

  private async publishNow(): Promise<void> {
    try {
      const json = JSON.stringify(await this.registry.getMetricsAsJSON());
      await this.redis.set(supervisorMetricsKey(this.config.supervisorHostId), json, 'EX', SUPERVISOR_METRICS_TTL_S);
    } catch (err) {
      this.logger.warn(`metrics not published: ${(err as Error).message}`);
    }
  }
}
