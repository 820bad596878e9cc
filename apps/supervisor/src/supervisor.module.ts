import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { APP_CONFIG, loadConfig } from '@flexy/config';
import { PersistenceModule } from '@flexy/persistence';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import { GenerateHandler } from './generation/generate.handler';
import { QueueWorkerService } from './jobs/queue-worker.service';
import { WorkerPool } from './workers/worker-pool.service';

const config = loadConfig();

@Module({
  imports: [DiscoveryModule, PersistenceModule.forRoot(config.databaseUrl)],
  providers: [
    { provide: APP_CONFIG, useValue: config },
    { provide: IMAGE_STORE, useValue: new ImageStore(config.imagesDir) },
    WorkerPool,
    QueueWorkerService,
    GenerateHandler,
  ],
})
export class SupervisorModule {}
