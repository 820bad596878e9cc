import { Inject, Injectable, Logger, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import { APP_CONFIG, REDIS, type AppConfig } from '@flexy/config';
import { GenerationLifecycle } from '@flexy/generations';
import { GenerationsRepository } from '@flexy/persistence';
import type Redis from 'ioredis';

/** A create records first and queues right after: a record younger than this may not have its job yet. */
const INTAKE_GRACE_MS = 15_000;
const PAGE = 200;
const GROUPS_PER_PASS = 500;
const LOCK_KEY = 'flexy:reconciler:lock';

export interface ReconcilePass {
  checked: number;
  enqueued: number;
  settled: number;
  groupsFinished: number;
}

/**
 * The database is the record of what was promised; Redis only delivers it. At start and every
 * RECONCILE_INTERVAL_MS, each supervisor walks the generations the database holds as queued or
 * running and has the lifecycle put back on the queue those with no live BullMQ job (Redis lost them:
 * a crash between AOF fsyncs, a failover to a lagging replica, a flushed or replaced instance), then
 * finishes the sandbox runs and batches whose members all ended. Several supervisors may do it at
 * once: every step is idempotent by job id; a short lock in Redis only spares the duplicate work.
 */
@Injectable()
export class Reconciler implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(Reconciler.name);
  private timer: NodeJS.Timeout | null = null;
  private pass: Promise<ReconcilePass | null> | null = null;
  private stopping = false;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(REDIS) private readonly redis: Redis,
    private readonly lifecycle: GenerationLifecycle,
    private readonly generations: GenerationsRepository,
  ) {}

  onApplicationBootstrap(): void {
    void this.runOnce();
    this.timer = setInterval(() => void this.runOnce(), this.config.reconcileIntervalMs);
    this.timer.unref();
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
  }

  /** One pass (or the one already under way); null when another supervisor holds the lock or it failed. */
  runOnce(): Promise<ReconcilePass | null> {
    this.pass ??= this.reconcile()
      .catch((err: Error) => {
        this.logger.warn(`reconcile pass failed (${err.message}); the next one runs in ${this.config.reconcileIntervalMs} ms`);
        return null;
      })
      .finally(() => (this.pass = null));
    return this.pass;
  }

  private async reconcile(): Promise<ReconcilePass | null> {
    const held = await this.redis.set(LOCK_KEY, this.config.supervisorHostId, 'PX', Math.max(1000, Math.floor(this.config.reconcileIntervalMs / 2)), 'NX');
    if (held !== 'OK') return null;
    const pass: ReconcilePass = { checked: 0, enqueued: 0, settled: 0, groupsFinished: 0 };
    const before = new Date(Date.now() - INTAKE_GRACE_MS);
    let after: string | undefined;
    for (;;) {
      const page = await this.generations.unfinished(before, { after, take: PAGE });
      for (const g of page) {
        if (this.stopping) return pass;
        pass.checked++;
        const outcome = await this.lifecycle.reconcile(g);
        if (outcome === 'enqueued') pass.enqueued++;
        if (outcome === 'settled') pass.settled++;
      }
      if (page.length < PAGE) break;
      after = page[page.length - 1].id;
    }
    pass.groupsFinished = await this.lifecycle.finishStaleGroups(GROUPS_PER_PASS);
    if (pass.enqueued || pass.settled || pass.groupsFinished) {
      this.logger.warn(
        `reconciled: ${pass.checked} unfinished generation(s) checked, ${pass.enqueued} put back on the queue, ${pass.settled} settled as lost, ${pass.groupsFinished} sandbox run(s)/batch(es) finished`,
      );
    }
    return pass;
  }
}
