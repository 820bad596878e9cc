import { InjectQueue } from '@nestjs/bullmq';
import { ConflictException, Inject, Injectable, Logger, NotFoundException, ServiceUnavailableException } from '@nestjs/common';
import {
  appendGenerationEvent,
  appendGenerationEvents,
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
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import { engineSpec } from '@flexy/engines';
import { GenerationsRepository, type ApiKey, type CreateGenerationInput, type GenerationWithImages } from '@flexy/persistence';
import type { Queue } from 'bullmq';
import type Redis from 'ioredis';
import { randomInt, randomUUID } from 'node:crypto';
import { QuotaService } from '../auth/quota.service';
import { GroupCommit, type UnitOutcome } from '../common/group-commit';
import { CompletionWaiter } from './completion-waiter.service';
import type { CreateGenerationDto } from './create-generation.dto';
import { storeReferences } from './reference-images';

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

/** One caller's share of a group-commit round: a single create, or all the items of a batch. */
interface IntakeUnit {
  payloads: GenerateJobPayload[];
  link: GenerationLink;
}

function recordFor(p: GenerateJobPayload, link: GenerationLink): CreateGenerationInput {
  return {
    id: p.generationId,
    engine: p.engine,
    prompt: p.prompt,
    negativePrompt: p.negativePrompt,
    seed: p.seed,
    steps: p.steps,
    guidance: p.guidance,
    width: p.width,
    height: p.height,
    numImages: p.numImages,
    origin: p.origin,
    sandboxRunId: link.sandboxRunId ?? null,
    batchId: link.batchId ?? null,
    apiKeyId: p.apiKeyId,
    webhookUrl: p.webhookUrl,
  };
}

function jobFor(p: GenerateJobPayload) {
  return {
    name: JobName.Generate,
    data: p,
    opts: {
      jobId: p.generationId,
      priority: ORIGIN_PRIORITY[p.origin],
      attempts: JOB_ATTEMPTS,
      backoff: { type: 'exponential', delay: 1000 },
      removeOnComplete: { age: 3600, count: 5000 },
      removeOnFail: { age: 7 * 24 * 3600 },
    },
  };
}

@Injectable()
export class GenerationsService {
  private readonly logger = new Logger(GenerationsService.name);
  private readonly intake = new GroupCommit<IntakeUnit, void>(
    (units) => this.writeRound(units),
    (unit) => unit.payloads.length,
  );

  constructor(
    @InjectQueue(QueueName.Generation) private readonly queue: Queue,
    private readonly generations: GenerationsRepository,
    private readonly waiter: CompletionWaiter,
    @Inject(REDIS) private readonly redis: Redis,
    private readonly quota: QuotaService,
    @Inject(IMAGE_STORE) private readonly images: ImageStore,
  ) {}

  /** Records the request, then queues it with the generation id as job id. */
  async create(dto: CreateGenerationDto, link: GenerationLink = {}): Promise<{ id: string }> {
    const payload = this.payloadFor(dto, link, link.id ?? newGenerationId());
    if (dto.references?.length) payload.references = await storeReferences(this.images, payload.generationId, dto.references);
    await this.quota.reserveJobs(link.apiKey ?? null, [payload.generationId]);
    await this.enqueue([payload], link);
    return { id: payload.generationId };
  }

  /** Many generations in one database write and one queue round trip (batches). */
  async createMany(dtos: CreateGenerationDto[], link: GenerationLink): Promise<string[]> {
    const payloads = dtos.map((dto) => this.payloadFor(dto, link, newGenerationId()));
    await this.enqueue(payloads, link);
    return payloads.map((p) => p.generationId);
  }

  private payloadFor(dto: CreateGenerationDto, link: GenerationLink, generationId: string): GenerateJobPayload {
    const spec = engineSpec(dto.engine);
    return {
      generationId,
      engine: dto.engine,
      prompt: dto.prompt,
      negativePrompt: dto.negative_prompt ?? null,
      seed: dto.seed ?? randomInt(0, 0xffffffff),
      steps: dto.steps ?? spec.defaults.steps,
      guidance: dto.guidance ?? spec.defaults.guidance,
      width: dto.width ?? spec.defaults.width,
      height: dto.height ?? spec.defaults.height,
      numImages: dto.num_images ?? 1,
      references: [],
      origin: link.origin ?? 'interactive',
      apiKeyId: link.apiKey?.id ?? null,
      webhookUrl: dto.webhook_url ?? null,
      acceptedAt: Date.now(),
    };
  }

  /**
   * Records, then queues, through the group commit: concurrent creates share one database write,
   * one events write and one queue write.
   */
  private enqueue(payloads: GenerateJobPayload[], link: GenerationLink): Promise<void> {
    return this.intake.submit({ payloads, link });
  }

  /** One round of the group commit. If the queue refuses, the records are failed rather than left claiming a job. */
  private async writeRound(units: IntakeUnit[]): Promise<UnitOutcome<void>[]> {
    const outcomes = await this.record(units);
    const live = units.filter((_, i) => outcomes[i].ok);
    if (live.length === 0) return outcomes;
    // The 'queued' events go first so no worker's 'running' can precede them in a stream.
    const ahead = await this.queue.getJobCountByTypes('waiting', 'prioritized').catch(() => null);
    let position = ahead;
    const events = live.flatMap(({ payloads }) =>
      payloads.map((p) => ({
        id: p.generationId,
        // A position only for single creates: the items of a batch wait behind all interactive work anyway.
        event: { type: 'queued' as const, position: payloads.length === 1 && position !== null ? position++ : null },
      })),
    );
    await appendGenerationEvents(this.redis, events).catch(() => undefined);
    try {
      await this.queue.addBulk(live.flatMap(({ payloads }) => payloads.map(jobFor)));
    } catch (err) {
      for (const unit of live) outcomes[units.indexOf(unit)] = { ok: false, error: await this.failUnqueued(unit, err as Error) };
    }
    return outcomes;
  }

  /** All units' rows in one statement; if that fails, each unit alone, so one unit's bad row fails only its own request. */
  private async record(units: IntakeUnit[]): Promise<UnitOutcome<void>[]> {
    const rowsOf = (unit: IntakeUnit) => unit.payloads.map((p) => recordFor(p, unit.link));
    const settle = (write: Promise<void>): Promise<UnitOutcome<void>> =>
      write.then(
        () => ({ ok: true as const, value: undefined }),
        (error: unknown) => ({ ok: false as const, error }),
      );
    const together = await settle(this.generations.createMany(units.flatMap(rowsOf)));
    if (together.ok || units.length === 1) return units.map(() => together);
    return Promise.all(units.map((unit) => settle(this.generations.createMany(rowsOf(unit)))));
  }

  private async failUnqueued({ payloads, link }: IntakeUnit, err: Error): Promise<ServiceUnavailableException> {
    const ids = payloads.map((p) => p.generationId);
    await this.quota.releaseJobs(link.apiKey?.id ?? null, ids).catch(() => undefined);
    const error = { code: 'queue_unavailable', message: err.message, field: null };
    for (const id of ids) await this.generations.markFailed(id, error).catch(() => undefined);
    await appendGenerationEvents(this.redis, ids.map((id) => ({ id, event: { type: 'failed', error } }))).catch(() => undefined);
    this.logger.error(`queueing ${ids.length} job(s) failed: ${err.message}`);
    return new ServiceUnavailableException({ statusCode: 503, message: 'the job queue is unavailable; retry shortly', retry_after_s: 2 });
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
