import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { APP_CONFIG, createRedis, loadConfig, REDIS, reportQueueErrors } from '@flexy/config';
import { QueueName } from '@flexy/contracts';
import { GENERATION_QUEUE, GenerationLifecycle, IdempotencyService, QuotaService, WEBHOOK_QUEUE } from '@flexy/generations';
import { PersistenceModule } from '@flexy/persistence';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import { CancelListener } from './generation/cancel-listener.service';
import { GenerateHandler } from './generation/generate.handler';
import { Reconciler } from './generation/reconciler.service';
import { RetentionHandler } from './maintenance/retention.handler';
import { GenerationMetrics } from './metrics/generation-metrics.service';
import { QueueWorkerService } from './jobs/queue-worker.service';
import { WebhookHandler } from './webhooks/webhook.handler';
import { WorkerPool } from './workers/worker-pool.service';

const config = loadConfig();

/**
 * A producer-side queue handle. Its connection errors go to the process's Redis outage reporter (one
 * line per outage); a failed add fails visibly on its own and the connection reconnects by itself.
 */
function quietQueue(name: QueueName, redis: Redis): Queue {
  const queue = new Queue(name, { connection: redis });
  reportQueueErrors(queue, `queue ${name}`);
  return queue;
}

@Module({
  imports: [DiscoveryModule, PersistenceModule.forRoot(config.databaseUrl)],
  providers: [
    { provide: APP_CONFIG, useValue: config },
    { provide: IMAGE_STORE, useValue: new ImageStore(config.imagesDir) },
    {
      provide: REDIS,
      // Commands wait for the reconnect (no retry limit); an outage is logged once per process.
      useFactory: () => createRedis(config.redisUrl, { maxRetriesPerRequest: null }),
    },
    { provide: GENERATION_QUEUE, useFactory: (redis: Redis) => quietQueue(QueueName.Generation, redis), inject: [REDIS] },
    { provide: WEBHOOK_QUEUE, useFactory: (redis: Redis) => quietQueue(QueueName.Webhook, redis), inject: [REDIS] },
    GenerationLifecycle,
    QuotaService,
    IdempotencyService,
    CancelListener,
    WorkerPool,
    QueueWorkerService,
    GenerateHandler,
    Reconciler,
    WebhookHandler,
    RetentionHandler,
    GenerationMetrics,
  ],
})
export class SupervisorModule {}
