import { getQueueToken } from '@nestjs/bullmq';
import { Injectable, type OnModuleDestroy } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { QueueName } from '@flexy/contracts';
import { APP_CONFIG, REDIS, reportQueueErrors, type AppConfig } from '@flexy/config';
import { IMAGE_STORE, type ImageStore } from '@flexy/storage';
import { Queue } from 'bullmq';
import type Redis from 'ioredis';
import { GenerationLifecycle } from '@flexy/generations';
import { SandboxService } from '../sandbox/sandbox.service';

/**
 * The gateway's own instances, borrowed by the admin module: one Redis connection, the same queue
 * objects, and the same generation lifecycle the public API uses. They are looked up
 * on first use because they belong to the module that imports this one.
 */
@Injectable()
export class GatewayServices implements OnModuleDestroy {
  private readonly found = new Map<unknown, unknown>();
  private readonly ownQueues: Queue[] = [];

  constructor(private readonly moduleRef: ModuleRef) {}

  get redis(): Redis {
    return this.lookup<Redis>(REDIS);
  }

  get config(): AppConfig {
    return this.lookup<AppConfig>(APP_CONFIG);
  }

  get images(): ImageStore {
    return this.lookup<ImageStore>(IMAGE_STORE);
  }

  get lifecycle(): GenerationLifecycle {
    return this.lookup(GenerationLifecycle);
  }

  get sandbox(): SandboxService {
    return this.lookup(SandboxService);
  }

  /** Every queue of the service, in QueueName order. */
  queues(): Queue[] {
    return Object.values(QueueName).map((name) => this.queue(name));
  }

  queue(name: QueueName): Queue {
    const token = getQueueToken(name);
    if (!this.found.has(token)) {
      let queue: Queue;
      try {
        queue = this.moduleRef.get<Queue>(token, { strict: false });
      } catch {
        // A queue the gateway does not produce to still gets watched.
        queue = new Queue(name, { connection: this.redis });
        reportQueueErrors(queue, `queue ${name}`);
        this.ownQueues.push(queue);
      }
      this.found.set(token, queue);
    }
    return this.found.get(token) as Queue;
  }

  async onModuleDestroy(): Promise<void> {
    await Promise.all(this.ownQueues.map((q) => q.close()));
  }

  private lookup<T>(token: unknown): T {
    if (!this.found.has(token)) this.found.set(token, this.moduleRef.get(token as never, { strict: false }));
    return this.found.get(token) as T;
  }
}
