import { Inject, Injectable, Logger, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import { JobName, QueueName, type JobMap } from '@flexy/contracts';
import { APP_CONFIG, createRedis, reportQueueErrors, type AppConfig } from '@flexy/config';
import { Worker, type Job } from 'bullmq';
import { GenerationMetrics } from '../metrics/generation-metrics.service';
import { WorkerPool } from '../workers/worker-pool.service';
import { ON_JOB } from './on-job.decorator';

/**
 * What a handler gets besides the job: the lock token (to hand the job back to the queue) and a
 * signal that aborts, with an `InterruptReason`, when this supervisor must stop working on the job.
 */
type Handler = (job: Job, token: string | undefined, signal: AbortSignal | undefined) => Promise<unknown>;

/**
 * Why a running job is taken away from its handler: the supervisor is shutting down (the job goes
 * back to the queue), or its lock was lost (another supervisor may already hold it; hands off).
 */
export type InterruptReason = 'shutdown' | 'lock-lost';

/** Which queue each job name travels on; the compiler keeps this in step with JobMap. */
const JOB_QUEUE: { [N in JobName]: JobMap[N]['queue'] } = {
  [JobName.Generate]: QueueName.Generation,
  [JobName.DeliverWebhook]: QueueName.Webhook,
  [JobName.ExpireGenerations]: QueueName.Maintenance,
};

/** After the grace period, how long interrupted jobs get to stop between steps before their workers are stopped. */
const INTERRUPT_WAIT_MS = 10_000;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/**
 * Runs one BullMQ Worker per queue and dispatches each job to the method marked @OnJob for its
 * name. Start-up fails if a job name has no handler, so a producer can never enqueue work that
 * nothing consumes.
 *
 * The generation queue is taken from only while this host has a serving Python worker, and at most
 * one job per serving worker: a host whose workers are restarting leaves the queue to the others.
 */
@Injectable()
export class QueueWorkerService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(QueueWorkerService.name);
  private readonly handlers = new Map<JobName, Handler>();
  private readonly workers: Worker[] = [];
  private generation: Worker | null = null;
  private draining: Promise<void> | null = null;
  /** Generation jobs in a handler right now (for the shutdown log). */
  private running = 0;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly reflector: Reflector,
    private readonly pool: WorkerPool,
    private readonly metrics: GenerationMetrics,
  ) {}

  onApplicationBootstrap(): void {
    for (const wrapper of this.discovery.getProviders()) {
      const instance = wrapper.instance as Record<string, unknown> | undefined;
      if (!instance || typeof instance !== 'object') continue;
      for (const method of this.scanner.getAllMethodNames(Object.getPrototypeOf(instance))) {
        const name = this.reflector.get<JobName | undefined>(ON_JOB, instance[method] as () => unknown);
        if (!name) continue;
        if (this.handlers.has(name)) throw new Error(`two handlers for job ${name}`);
        this.handlers.set(name, (instance[method] as Handler).bind(instance));
      }
    }
    const missing = Object.values(JobName).filter((n) => !this.handlers.has(n));
    if (missing.length) throw new Error(`no handler for job(s): ${missing.join(', ')}`);

    const queues = new Set(Object.values(JOB_QUEUE));
    for (const queue of queues) {
      const isGeneration = queue === QueueName.Generation;
      const worker = new Worker(queue, (job, token, signal) => this.dispatch(job, token, signal), {
        connection: createRedis(this.config.redisUrl, { maxRetriesPerRequest: null }),
        // One job per serving Python worker: a GPU runs one generation at a time.
        concurrency: isGeneration ? Math.max(1, this.pool.servingCount()) : 4,
        autorun: !isGeneration || this.pool.servingCount() > 0,
        lockDuration: this.config.queueLockDurationMs,
        stalledInterval: this.config.queueStalledIntervalMs,
        maxStalledCount: 2,
      });
      // While Redis is away every retry fails the same way: one line per outage, not one per retry.
      reportQueueErrors(worker, `queue ${queue}`);
      // BullMQ renews locks from Node; once one is lost another supervisor may take the job, so
      // the GPU run stops here (the result write is idempotent either way).
      worker.on('lockRenewalFailed', (jobIds: string[]) => {
        for (const jobId of jobIds) {
          this.pool.interrupt(jobId);
          if (worker.cancelJob(jobId, 'lock-lost' satisfies InterruptReason)) this.logger.warn(`lost the lock of ${jobId}; stopping its run`);
        }
      });
      if (isGeneration) this.generation = worker;
      this.workers.push(worker);
      this.logger.log(`consuming queue ${queue}`);
    }
    this.pool.onCapacityChange((serving) => this.applyCapacity(serving));
  }

  /**
   * SIGTERM: take no new jobs; let running ones finish within the grace period; then interrupt them
   * between steps and put them back in the queue for another supervisor. Resolves once no job of
   * this supervisor is active.
   */
  drain(graceMs: number): Promise<void> {
    this.draining ??= this.drainNow(graceMs);
    return this.draining;
  }

  private async drainNow(graceMs: number): Promise<void> {
    this.pool.beginShutdown();
    this.logger.log(`draining: no new jobs; ${this.running} running generation job(s) get ${graceMs} ms to finish`);
    // close() stops fetching at once and resolves when the active jobs are done.
    const closed = Promise.all(this.workers.map((w) => w.close())).then(() => true);
    if (await Promise.race([closed, sleep(graceMs).then(() => false)])) return;
    this.logger.warn(`grace period over: interrupting ${this.running} generation job(s) to put them back in the queue`);
    this.pool.interrupt();
    this.generation?.cancelAllJobs('shutdown' satisfies InterruptReason);
    if (await Promise.race([closed, sleep(INTERRUPT_WAIT_MS).then(() => false)])) return;
    // A step stuck in a kernel never reaches the cancel: stopping the worker fails the run, and the
    // handler, seeing the interrupt, puts the job back all the same.
    this.pool.killBusy(`did not stop its job within ${INTERRUPT_WAIT_MS} ms of the shutdown interrupt`);
    await closed;
  }

  /** Runs before the Python workers are stopped; a SIGTERM has normally drained already. */
  async beforeApplicationShutdown(): Promise<void> {
    await this.drain(this.config.supervisorGraceMs);
  }

  private applyCapacity(serving: number): void {
    const worker = this.generation;
    if (!worker || this.draining) return;
    if (serving === 0) {
      if (!worker.isPaused()) {
        this.logger.warn('no serving worker on this host: not taking generation jobs');
        void worker.pause(true);
      }
      return;
    }
    worker.concurrency = serving;
    if (worker.isPaused() || !worker.isRunning()) {
      this.logger.log(`taking generation jobs (${serving} serving worker(s))`);
      void worker.resume();
    }
  }

  private async dispatch(job: Job, token: string | undefined, signal: AbortSignal | undefined): Promise<unknown> {
    const handler = this.handlers.get(job.name as JobName);
    if (!handler) throw new Error(`no handler for job ${job.name}`);
    if (job.queueName !== QueueName.Generation) return handler(job, token, signal);
    // Fetched while closing (a blocking fetch was in flight): the handler hands it straight back.
    if (this.draining) this.generation?.cancelJob(job.id!, 'shutdown' satisfies InterruptReason);
    this.running += 1;
    const since = new Date();
    try {
      return await handler(job, token, signal);
    } finally {
      this.running -= 1;
      const id = (job.data as { generationId?: unknown } | undefined)?.generationId;
      if (typeof id === 'string') void this.metrics.jobEnded(id, since).catch((err: Error) => this.logger.warn(`metrics of ${id}: ${err.message}`));
    }
  }
}
