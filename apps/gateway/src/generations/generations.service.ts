import { InjectQueue } from '@nestjs/bullmq';
import { ConflictException, Inject, Injectable, Logger, NotFoundException, ServiceUnavailableException } from '@nestjs/common';
import {
  appendGenerationEvent,
  CANCEL_CHANNEL,
  cancelFlagKey,
  JobName,
  ORIGIN_PRIORITY,
  QueueName,
  type GenerateJobPayload,
  type GenerationEvent,
  type JobOrigin,
} from '@flexy/contracts';
import { REDIS } from '@flexy/config';
import { engineSpec } from '@flexy/engines';
import { GenerationsRepository, type ApiKey, type GenerationWithImages } from '@flexy/persistence';
import type { Queue } from 'bullmq';
import type Redis from 'ioredis';
import { randomInt, randomUUID } from 'node:crypto';
import { QuotaService } from '../auth/quota.service';
import { CompletionWaiter } from './completion-waiter.service';
import type { CreateGenerationDto } from './create-generation.dto';

/** Attempts per job: the first run plus retries for worker loss or one out-of-memory. */
const JOB_ATTEMPTS = 3;
export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

/** Where a generation belongs: its origin (which sets its priority), the run or batch it is part of, who asked. */
export interface GenerationLink {
  origin?: JobOrigin;
  sandboxRunId?: string;
  batchId?: string;
  apiKey?: ApiKey | null;
  /** A pre-chosen id (idempotent creates claim it before the record exists). */
  id?: string;
}

export const newGenerationId = () => `gen_${randomUUID().replace(/-/g, '')}`;

@Injectable()
export class GenerationsService {
  private readonly logger = new Logger(GenerationsService.name);

  constructor(
    @InjectQueue(QueueName.Generation) private readonly queue: Queue,
    private readonly generations: GenerationsRepository,
    private readonly waiter: CompletionWaiter,
    @Inject(REDIS) private readonly redis: Redis,
    private readonly quota: QuotaService,
  ) {}

  /** Records the request, then queues it with the generation id as job id. */
  async create(dto: CreateGenerationDto, link: GenerationLink = {}) {
    const origin = link.origin ?? 'interactive';
    const apiKey = link.apiKey ?? null;
    const spec = engineSpec(dto.engine);
    const payload: GenerateJobPayload = {
      generationId: link.id ?? newGenerationId(),
      engine: dto.engine,
      prompt: dto.prompt,
      negativePrompt: dto.negative_prompt ?? null,
      seed: dto.seed ?? randomInt(0, 0xffffffff),
      steps: dto.steps ?? spec.defaults.steps,
      guidance: dto.guidance ?? spec.defaults.guidance,
      width: dto.width ?? spec.defaults.width,
      height: dto.height ?? spec.defaults.height,
      numImages: dto.num_images ?? 1,
      origin,
      apiKeyId: apiKey?.id ?? null,
      webhookUrl: dto.webhook_url ?? null,
      acceptedAt: Date.now(),
    };
    await this.quota.reserveJobs(apiKey, [payload.generationId]);
    const record = await this.generations.create({
      id: payload.generationId,
      engine: payload.engine,
      prompt: payload.prompt,
      negativePrompt: payload.negativePrompt,
      seed: payload.seed,
      steps: payload.steps,
      guidance: payload.guidance,
      width: payload.width,
      height: payload.height,
      numImages: payload.numImages,
      origin,
      sandboxRunId: link.sandboxRunId ?? null,
      batchId: link.batchId ?? null,
      apiKeyId: payload.apiKeyId,
      webhookUrl: payload.webhookUrl,
    });
    try {
      await this.queue.add(JobName.Generate, payload, {
        jobId: payload.generationId,
        priority: ORIGIN_PRIORITY[origin],
        attempts: JOB_ATTEMPTS,
        backoff: { type: 'exponential', delay: 1000 },
        removeOnComplete: { age: 3600, count: 5000 },
        removeOnFail: { age: 7 * 24 * 3600 },
      });
    } catch (err) {
      // The record must not claim a queued job that no queue holds.
      await this.quota.releaseJobs(apiKey?.id ?? null, [record.id]);
      await this.generations.markFailed(record.id, { code: 'queue_unavailable', message: (err as Error).message, field: null });
      this.logger.error(`queueing ${record.id} failed: ${(err as Error).message}`);
      throw new ServiceUnavailableException('the job queue is unavailable; retry shortly');
    }
    const position = await this.queue.getJobCountByTypes('waiting', 'prioritized').catch(() => null);
    await appendGenerationEvent(this.redis, record.id, { type: 'queued', position }).catch(() => undefined);
    return record;
  }

  /**
   * Cancels a generation. A job still in the queue is removed and recorded as cancelled at once; a
   * running one is flagged and signalled, and its worker stops between two steps.
   */
  async cancel(id: string): Promise<'cancelled' | 'cancelling'> {
    const g = await this.get(id);
    if (TERMINAL.has(g.status)) throw new ConflictException(`generation ${id} is already ${g.status}`);
    await this.redis.set(cancelFlagKey(id), '1', 'EX', 3600);
    const job = await this.queue.getJob(id);
    const state = job ? await job.getState() : 'unknown';
    if (job && ['waiting', 'prioritized', 'delayed', 'waiting-children'].includes(state)) {
      const removed = await job.remove().then(
        () => true,
        () => false, // taken by a worker in the meantime: fall through to the signal
      );
      if (removed) {
        await this.generations.markCancelled(id);
        await this.quota.releaseJobs(g.apiKeyId, [id]);
        await appendGenerationEvent(this.redis, id, { type: 'cancelled' });
        return 'cancelled';
      }
    }
    await this.redis.publish(CANCEL_CHANNEL, id);
    return 'cancelling';
  }

  /** The terminal event of a finished generation, rebuilt from its record. */
  async finalEvent(id: string): Promise<GenerationEvent | null> {
    const g = await this.generations.findById(id);
    if (!g) return null;
    if (g.status === 'succeeded') return { type: 'succeeded', image_url: `/v1/generations/${id}/image` };
    if (g.status === 'cancelled') return { type: 'cancelled' };
    if (g.status === 'failed')
      return { type: 'failed', error: { code: g.errorCode ?? 'internal', message: g.errorMessage ?? '', field: g.errorField ?? null } };
    return null;
  }

  /** The record once it is terminal (succeeded, failed, cancelled), or null if `timeoutMs` passes first. */
  async waitForTerminal(id: string, timeoutMs: number) {
    const seen: { latest: GenerationWithImages | null } = { latest: null };
    const done = await this.waiter.waitUntil(
      id,
      async () => {
        seen.latest = await this.generations.findById(id);
        return !!seen.latest && TERMINAL.has(seen.latest.status);
      },
      timeoutMs,
    );
    return done ? seen.latest : null;
  }

  async get(id: string) {
    const g = await this.generations.findById(id);
    if (!g) throw new NotFoundException(`generation ${id} not found`);
    return g;
  }
}
