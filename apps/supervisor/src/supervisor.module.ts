import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { APP_CONFIG, loadConfig, REDIS } from '@flexy/config';
import { PersistenceModule } from '@flexy/persistence';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import IORedis from 'ioredis';
import { CancelListener } from './generation/cancel-listener.service';
import { GenerateHandler } from './generation/generate.handler';
import { QueueWorkerService } from './jobs/queue-worker.service';
import { WebhookHandler } from './webhooks/webhook.handler';
import { WorkerPool } from './workers/worker-pool.service';

const config = loadConfig();

@Module({
  imports: [DiscoveryModule, PersistenceModule.forRoot(config.databaseUrl)],
  providers: [
    { provide: APP_CONFIG, useValue: config },
    { provide: IMAGE_STORE, useValue: new ImageStore(config.imagesDir) },
    {
      provide: REDIS,
      useFactory: () => {
        const redis = new IORedis(config.redisUrl, { maxRetriesPerRequest: null });
        redis.on('error', () => undefined); // commands wait for the reconnect (no retry limit); the queue workers log the outage
        return redis;
      },
    },
    CancelListener,
    WorkerPool,
    QueueWorkerService,
    GenerateHandler,
    WebhookHandler,
  ],
})
export class SupervisorModule {}
