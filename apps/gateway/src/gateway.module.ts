import { BullModule, getQueueToken } from '@nestjs/bullmq';
import { Module } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { QueueName } from '@flexy/contracts';
import { APP_CONFIG, createRedis, loadConfig, REDIS, reportQueueErrors } from '@flexy/config';
import { GENERATION_QUEUE, GenerationLifecycle, IdempotencyService, QuotaService, WEBHOOK_QUEUE } from '@flexy/generations';
import { PersistenceModule } from '@flexy/persistence';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import type { Queue } from 'bullmq';
import { AdminModule } from './admin/admin.module';
import { ApiKeyGuard } from './auth/api-key.guard';
import { BatchesController } from './batches/batches.controller';
import { BatchesService } from './batches/batches.service';
import { CompletionWaiter } from './generations/completion-waiter.service';
import { GenerationEventsService } from './generations/generation-events.service';
import { GenerationsController } from './generations/generations.controller';
import { EventHub } from './generations/event-hub.service';
import { HealthController } from './health/health.controller';
import { MetricsService } from './health/metrics.service';
import { PromptPicsController } from './promptpics/promptpics.controller';
import { SandboxRunsController } from './sandbox/sandbox-runs.controller';
import { SandboxService } from './sandbox/sandbox.service';
import { EnginesController } from './status/engines.controller';
import { StatusService } from './status/status.service';

const config = loadConfig();

/**
 * No offline queue: while Redis is down a create fails at once (503) instead of hanging. It reconnects
 * by itself; the outage is logged once.
 */
function failFastRedis() {
  return createRedis(config.redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
}

@Module({
  imports: [
    PersistenceModule.forRoot(config.databaseUrl),
    BullModule.forRootAsync({ useFactory: () => ({ connection: failFastRedis() }) }),
    BullModule.registerQueue({ name: QueueName.Generation }, { name: QueueName.Webhook }),
    AdminModule,
  ],
  controllers: [GenerationsController, PromptPicsController, SandboxRunsController, BatchesController, EnginesController, HealthController],
  providers: [
    { provide: APP_CONFIG, useValue: config },
    { provide: IMAGE_STORE, useValue: new ImageStore(config.imagesDir) },
    { provide: REDIS, useFactory: failFastRedis },
    { provide: GENERATION_QUEUE, useExisting: getQueueToken(QueueName.Generation) },
    {
      // The queues' connection errors go to the process's Redis outage reporter: one line per outage.
      provide: 'QUEUE_ERROR_REPORTING',
      useFactory: (...queues: Queue[]) => queues.forEach((q) => reportQueueErrors(q, `queue ${q.name}`)),
      inject: [getQueueToken(QueueName.Generation), getQueueToken(QueueName.Webhook)],
    },
    { provide: WEBHOOK_QUEUE, useExisting: getQueueToken(QueueName.Webhook) },
    GenerationLifecycle,
    QuotaService,
    IdempotencyService,
    EventHub,
    GenerationEventsService,
    SandboxService,
    BatchesService,
    { provide: APP_GUARD, useClass: ApiKeyGuard },
    StatusService,
    MetricsService,
    CompletionWaiter,
  ],
})
export class GatewayModule {}
