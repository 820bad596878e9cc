import { Inject, Injectable, Logger, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { CANCEL_CHANNEL } from '@flexy/contracts';
import { APP_CONFIG, createRedis, type AppConfig } from '@flexy/config';
import type IORedis from 'ioredis';
import { WorkerPool } from '../workers/worker-pool.service';

/**
 * Cancels reach every supervisor over pub/sub; the one whose worker holds the job forwards it, and
 * the worker stops between two denoising steps. Jobs not yet started are caught by the cancel flag
 * the handler checks before it runs a job.
 */
@Injectable()
export class CancelListener implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger(CancelListener.name);
  private subscriber!: IORedis;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly pool: WorkerPool,
  ) {}

  async onModuleInit(): Promise<void> {
    this.subscriber = createRedis(this.config.redisUrl, { maxRetriesPerRequest: null }); // resubscribes after a reconnect
    this.subscriber.on('message', (_channel, jobId: string) => {
      if (this.pool.cancel(jobId)) this.logger.log(`cancel forwarded for ${jobId}`);
    });
    await this.subscriber.subscribe(CANCEL_CHANNEL);
  }

  async onModuleDestroy(): Promise<void> {
    this.subscriber?.disconnect();
  }
}
