import { Inject, Injectable, Logger, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import { JobName, QueueName, type JobMap } from '@flexy/contracts';
import { APP_CONFIG, type AppConfig } from '@flexy/config';
import { Worker, type Job } from 'bullmq';
import IORedis from 'ioredis';
import { WorkerPool } from '../workers/worker-pool.service';
import { ON_JOB } from './on-job.decorator';

type Handler = (job: Job) => Promise<unknown>;

/** Which queue each job name travels on; the compiler keeps this in step with JobMap. */
const JOB_QUEUE: { [N in JobName]: JobMap[N]['queue'] } = {
  [JobName.Generate]: QueueName.Generation,
  [JobName.DeliverWebhook]: QueueName.Webhook,
};

/**
 * Runs one BullMQ Worker per queue and dispatches each job to the method marked @OnJob for its
 * name. Start-up fails if a job name has no handler, so a producer can never enqueue work that
 * nothing consumes.
 */
@Injectable()
export class QueueWorkerService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(QueueWorkerService.name);
  private readonly handlers = new Map<JobName, Handler>();
  private readonly workers: Worker[] = [];

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly reflector: Reflector,
    private readonly pool: WorkerPool,
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
      const worker = new Worker(queue, (job) => this.dispatch(job), {
        connection: new IORedis(this.config.redisUrl, { maxRetriesPerRequest: null }),
        // One job per Python worker: a GPU runs one generation at a time.
        concurrency: queue === QueueName.Generation ? this.pool.size : 4,
        lockDuration: 30_000,
        stalledInterval: 15_000,
        maxStalledCount: 2,
      });
      worker.on('error', (err) => this.logger.error(`queue ${queue}: ${err.message}`));
      // BullMQ renews locks from Node; once one is lost another supervisor may take the job, so
      // the GPU run stops here (the result write is idempotent either way).
      worker.on('lockRenewalFailed', (jobIds: string[]) => {
        for (const jobId of jobIds) {
          this.logger.warn(`lost the lock of ${jobId}; stopping its run`);
          this.pool.cancel(jobId);
        }
      });
      this.workers.push(worker);
      this.logger.log(`consuming queue ${queue}`);
    }
  }

  /** Runs before the Python workers are stopped: take no new jobs, let running ones finish. */
  async beforeApplicationShutdown(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
  }

  private dispatch(job: Job): Promise<unknown> {
    const handler = this.handlers.get(job.name as JobName);
    if (!handler) throw new Error(`no handler for job ${job.name}`);
    return handler(job);
  }
}
