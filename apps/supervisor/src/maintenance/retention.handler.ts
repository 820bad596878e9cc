import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { JobName, QueueName, type ExpireGenerationsResult } from '@flexy/contracts';
import { APP_CONFIG, REDIS, type AppConfig } from '@flexy/config';
import { GenerationLifecycle, IdempotencyService } from '@flexy/generations';
import { Queue } from 'bullmq';
import type Redis from 'ioredis';
import { OnJob } from '../jobs/on-job.decorator';

const SCHEDULER_ID = 'retention';
/** How often retention runs; each run removes what aged out since the last. */
const EVERY_MS = 10 * 60_000;
/** Records removed per statement, so one run never holds the database for long. */
const BATCH = 500;
/** One run stops after this long and leaves the rest to the next. */
const RUN_BUDGET_MS = 60_000;
const DAY_MS = 24 * 3600_000;

/**
 * Retention: every ten minutes one supervisor (a BullMQ job scheduler, so several supervisors do not
 * repeat the work) removes finished generations older than RETENTION_DAYS with their images, then
 * the sandbox runs and batches that emptied, all in bounded batches, and idempotency records older
 * than a day. RETENTION_DAYS=0 keeps everything.
 */
@Injectable()
export class RetentionHandler implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger(RetentionHandler.name);
  private readonly queue: Queue;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(REDIS) redis: Redis,
    private readonly lifecycle: GenerationLifecycle,
    private readonly idempotency: IdempotencyService,
  ) {
    this.queue = new Queue(QueueName.Maintenance, { connection: redis });
    this.queue.on('error', () => undefined);
  }

  async onApplicationBootstrap(): Promise<void> {
    // Every supervisor states the schedule; the last one to start wins, which is the same schedule.
    await this.queue
      .upsertJobScheduler(SCHEDULER_ID, { every: EVERY_MS }, { name: JobName.ExpireGenerations, data: {}, opts: { removeOnComplete: 10, removeOnFail: 10 } })
      .catch((err: Error) => this.logger.warn(`could not schedule retention: ${err.message}`));
  }

  async onModuleDestroy(): Promise<void> {
    await this.queue.close();
  }

  @OnJob(JobName.ExpireGenerations)
  async handle(): Promise<ExpireGenerationsResult> {
    const started = Date.now();
    const idempotencyRecords = await this.idempotency.expire(new Date(started - DAY_MS));
    const removed = { expired: 0, sandboxRuns: 0, batches: 0 };
    if (this.config.retentionDays > 0) {
      const cutoff = new Date(started - this.config.retentionDays * DAY_MS);
      for (;;) {
        const batch = await this.lifecycle.expire(cutoff, BATCH);
        removed.expired += batch.generations;
        removed.sandboxRuns += batch.sandboxRuns;
        removed.batches += batch.batches;
        const full = Math.max(batch.generations, batch.sandboxRuns, batch.batches) >= BATCH;
        if (!full || Date.now() - started > RUN_BUDGET_MS) break;
      }
    }
    if (removed.expired || removed.sandboxRuns || removed.batches || idempotencyRecords) {
      this.logger.log(
        `retention: removed ${removed.expired} generation(s), ${removed.sandboxRuns} sandbox run(s), ${removed.batches} batch(es) and ${idempotencyRecords} idempotency record(s)`,
      );
    }
    return { ...removed, idempotencyRecords };
  }
}
