import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { QueueName, isTerminalStatus } from '@flexy/contracts';
import { APP_CONFIG, createRedis, reportQueueErrors, type AppConfig } from '@flexy/config';
import { GenerationsRepository, type GenerationWithImages } from '@flexy/persistence';
import { QueueEvents } from 'bullmq';

/**
 * Lets a request wait for its job to finish without polling: one QueueEvents stream per gateway
 * process, fanned out to the requests waiting on each job id. The caller re-reads the record after
 * a wake-up, so a retry's intermediate failure does not end its wait.
 */
@Injectable()
export class CompletionWaiter implements OnModuleInit, OnModuleDestroy {
  private events!: QueueEvents;
  private readonly waiters = new Map<string, Set<() => void>>();

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly generations: GenerationsRepository,
  ) {}

  async onModuleInit(): Promise<void> {
    this.events = new QueueEvents(QueueName.Generation, {
      connection: createRedis(this.config.redisUrl, { maxRetriesPerRequest: null }),
    });
    const wake = ({ jobId }: { jobId: string }) => this.wake(jobId);
    this.events.on('completed', wake);
    this.events.on('failed', wake);
    reportQueueErrors(this.events, 'completion events'); // reconnects by itself; waiters also poll
    await this.events.waitUntilReady().catch(() => undefined);
  }

  async onModuleDestroy(): Promise<void> {
    await this.events?.close();
  }

  /** The record once it is terminal (succeeded, failed, cancelled), or null if `timeoutMs` passes first. */
  async terminal(id: string, timeoutMs: number): Promise<GenerationWithImages | null> {
    let latest: GenerationWithImages | null = null;
    const done = await this.waitUntil(
      id,
      async () => {
        latest = await this.generations.findById(id);
        return !!latest && isTerminalStatus(latest.status);
      },
      timeoutMs,
    );
    return done ? latest : null;
  }

  /**
   * Resolves when `isDone` holds, re-checked on every event for the job and at least once a second,
   * or when the deadline passes. Returns whether it finished.
   */
  async waitUntil(jobId: string, isDone: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await isDone()) return true;
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await this.nextEvent(jobId, Math.min(left, 1000));
    }
  }

  private nextEvent(jobId: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const set = this.waiters.get(jobId) ?? new Set();
      this.waiters.set(jobId, set);
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0) this.waiters.delete(jobId);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      set.add(done);
    });
  }

  private wake(jobId: string): void {
    for (const fn of [...(this.waiters.get(jobId) ?? [])]) fn();
  }
}
