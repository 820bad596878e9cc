import { BadRequestException, ConflictException, Injectable, NotFoundException } from '@nestjs/common';
import { ORIGIN_PRIORITY, QueueName, type GenerateJobProgress } from '@flexy/contracts';
import { GenerationsRepository } from '@flexy/persistence';
import type { Job, JobType, Queue } from 'bullmq';
import { QUEUE_JOB_STATES, type QueueJobPage, type QueueJobRow, type QueueJobState, type QueueSummary } from '../admin.dto';
import { GatewayServices } from '../gateway-services';
import { dashboardPrincipal } from '@flexy/generations';

export const QUEUE_PAGE_SIZE = 20;
const HOUR_MS = 3600_000;
const BUCKET_MS = 5 * 60_000;
/** Bounds the work of one "retry failed" click; click again for more. */
const RETRY_BATCH = 500;

/** The BullMQ states behind each state the dashboard shows, in the order their jobs run or ended. */
const STATE_TYPES: Record<QueueJobState, Array<{ type: JobType; asc: boolean }>> = {
  // The wait list runs before the prioritized set; both are listed next-to-run first.
  waiting: [
    { type: 'wait', asc: true },
    { type: 'prioritized', asc: true },
  ],
  active: [{ type: 'active', asc: true }],
  delayed: [{ type: 'delayed', asc: true }],
  failed: [{ type: 'failed', asc: false }],
  completed: [{ type: 'completed', asc: false }],
};

function isQueueName(name: string): name is QueueName {
  return (Object.values(QueueName) as string[]).includes(name);
}

/**
 * What the queue page shows and does. Every figure comes from counters, sorted-set ranges or a
 * page of jobs, never a scan of the history, so the page costs the same at 10 or 10 million jobs.
 */
@Injectable()
export class QueueAdminService {
  constructor(
    private readonly gateway: GatewayServices,
    private readonly generations: GenerationsRepository,
  ) {}

  queue(name: string): Queue {
    if (!isQueueName(name)) throw new NotFoundException(`queue ${name} not found`);
    return this.gateway.queue(name);
  }

  names(): string[] {
    return Object.values(QueueName);
  }

  summaries(): Promise<QueueSummary[]> {
    return Promise.all(this.gateway.queues().map((q) => this.summary(q)));
  }

  async summary(queue: Queue): Promise<QueueSummary> {
    const now = Date.now();
    const redis = this.gateway.redis;
    const finishedIn = (key: string, from: number, to: number) => redis.zcount(key, from, `(${to}`);
    const buckets = Array.from({ length: HOUR_MS / BUCKET_MS }, (_, i) => now - HOUR_MS + i * BUCKET_MS);
    const [raw, paused, completed, failed, perFiveMinutes, oldestWaiting] = await Promise.all([
      queue.getJobCounts('wait', 'prioritized', 'waiting-children', 'active', 'delayed', 'failed', 'completed'),
      queue.isPaused(),
      // Finished sets are scored by finish time, so a range count is the hour's throughput.
      finishedIn(queue.keys.completed, now - HOUR_MS, now + 1),
      finishedIn(queue.keys.failed, now - HOUR_MS, now + 1),
      Promise.all(buckets.map((from) => finishedIn(queue.keys.completed, from, from + BUCKET_MS))),
      this.oldestWaiting(queue, now),
    ]);
    return {
      name: queue.name,
      paused,
      counts: {
        waiting: (raw.wait ?? 0) + (raw.prioritized ?? 0) + (raw['waiting-children'] ?? 0),
        active: raw.active ?? 0,
        delayed: raw.delayed ?? 0,
        failed: raw.failed ?? 0,
        completed: raw.completed ?? 0,
      },
      lastHour: { completed, failed, perFiveMinutes },
      oldestWaiting,
    };
  }

  /**
   * The oldest job not yet started. Within one priority the prioritized set keeps arrival order, so
   * the candidates are the wait list's tail and the first job of each priority's band.
   */
  private async oldestWaiting(queue: Queue, now: number): Promise<QueueSummary['oldestWaiting']> {
    const priorities = [...new Set(Object.values(ORIGIN_PRIORITY))].sort((a, b) => a - b);
    const perPriority = await queue.getCountsPerPriority(priorities);
    const candidates: Array<Promise<Job[]>> = [queue.getJobs(['wait'], 0, 0, true)];
    let offset = 0;
    for (const p of priorities) {
      const n = perPriority[String(p)] ?? 0;
      if (n > 0) candidates.push(queue.getJobs(['prioritized'], offset, offset, true));
      offset += n;
    }
    const jobs = (await Promise.all(candidates)).flat().filter((j): j is Job => !!j);
    if (!jobs.length) return null;
    const oldest = jobs.reduce((a, b) => (b.timestamp < a.timestamp ? b : a));
    return { jobId: oldest.id!, ageMs: Math.max(0, now - oldest.timestamp) };
  }

  async jobs(name: string, state: QueueJobState, page: number): Promise<QueueJobPage> {
    const queue = this.queue(name);
    const parts = STATE_TYPES[state];
    const counts = await queue.getJobCounts(...parts.map((p) => p.type));
    const total = parts.reduce((sum, p) => sum + (counts[p.type] ?? 0), 0);
    // One page may span the end of one BullMQ list and the start of the next.
    let start = (page - 1) * QUEUE_PAGE_SIZE;
    let want = QUEUE_PAGE_SIZE;
    const fetches: Array<Promise<Job[]>> = [];
    for (const part of parts) {
      const n = counts[part.type] ?? 0;
      if (want > 0 && start < n) {
        const end = Math.min(n, start + want) - 1;
        fetches.push(queue.getJobs([part.type], start, end, part.asc));
        want -= end - start + 1;
        start = 0;
      } else start = Math.max(0, start - n);
    }
    const jobs = (await Promise.all(fetches)).flat().filter((j): j is Job => !!j);
    return { queue: name, state, page, pageSize: QUEUE_PAGE_SIZE, total, jobs: jobs.map((j) => jobRow(j, state)) };
  }

  async pause(name: string): Promise<void> {
    await this.queue(name).pause();
  }

  async resume(name: string): Promise<void> {
    await this.queue(name).resume();
  }

  /**
   * Retries failed jobs. A generation whose record is final (failed) is submitted again as a new
   * generation with the same parameters, because records never leave a final state; a job whose
   * record is still open (lost in a stall) goes back to the queue as it is.
   */
  async retryFailed(name: string): Promise<{ requeued: number; resubmitted: number; newIds: string[] }> {
    const queue = this.queue(name);
    const failed = await queue.getJobs(['failed'], 0, RETRY_BATCH - 1, true);
    let requeued = 0;
    const newIds: string[] = [];
    for (const job of failed.filter(Boolean)) {
      const record = name === QueueName.Generation ? await this.generations.findById(job.id!) : null;
      if (record && (record.status === 'failed' || record.status === 'cancelled')) {
        newIds.push((await this.gateway.lifecycle.resubmit(dashboardPrincipal('admin'), record.id)).id);
        await job.remove().catch(() => undefined);
      } else {
        await job.retry('failed');
        requeued++;
      }
    }
    return { requeued, resubmitted: newIds.length, newIds };
  }

  /** Removes finished jobs from the queue (their records stay in the database). */
  async clean(name: string, state: 'completed' | 'failed', olderThanMinutes: number): Promise<{ removed: number }> {
    const removed = await this.queue(name).clean(olderThanMinutes * 60_000, 100_000, state);
    return { removed: removed.length };
  }

  /** Removes one finished job from the queue; unfinished ones are cancelled instead, so no record is left open. */
  async remove(name: string, jobId: string): Promise<void> {
    const job = await this.queue(name).getJob(jobId);
    if (!job) throw new NotFoundException(`job ${jobId} is not in queue ${name}`);
    const state = await job.getState();
    if (state !== 'completed' && state !== 'failed') throw new ConflictException(`job ${jobId} is ${state}: cancel it instead of removing it`);
    await job.remove();
  }

  static parseState(value: string | undefined): QueueJobState {
    if (value === undefined) return 'waiting';
    if (!(QUEUE_JOB_STATES as readonly string[]).includes(value)) throw new BadRequestException(`state must be one of ${QUEUE_JOB_STATES.join(', ')}`);
    return value as QueueJobState;
  }
}

function jobRow(job: Job, state: QueueJobState): QueueJobRow {
  const data = (job.data ?? {}) as Record<string, unknown>;
  const progress = job.progress as Partial<GenerateJobProgress> | number | undefined;
  return {
    id: job.id!,
    name: job.name,
    state,
    engine: typeof data.engine === 'string' ? data.engine : null,
    prompt: typeof (data.params as { prompt?: unknown } | undefined)?.prompt === 'string' ? (data.params as { prompt: string }).prompt : null,
    origin: typeof data.origin === 'string' ? data.origin : null,
    priority: job.priority ?? 0,
    attemptsMade: job.attemptsMade ?? 0,
    addedAt: job.timestamp,
    processedAt: job.processedOn ?? null,
    finishedAt: job.finishedOn ?? null,
    failedReason: job.failedReason || null,
    progress:
      progress && typeof progress === 'object' && typeof progress.step === 'number' && typeof progress.totalSteps === 'number'
        ? { step: progress.step, totalSteps: progress.totalSteps }
        : null,
  };
}
