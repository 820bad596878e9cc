import { InjectQueue } from '@nestjs/bullmq';
import { Injectable, Logger, NotFoundException, ServiceUnavailableException } from '@nestjs/common';
import { JobName, ORIGIN_PRIORITY, QueueName, type GenerateJobPayload, type JobOrigin } from '@flexy/contracts';
import { engineSpec } from '@flexy/engines';
import { GenerationsRepository } from '@flexy/persistence';
import type { Queue } from 'bullmq';
import { randomInt, randomUUID } from 'node:crypto';
import { CompletionWaiter } from './completion-waiter.service';
import type { CreateGenerationDto } from './create-generation.dto';

/** Attempts per job: the first run plus retries for worker loss or one out-of-memory. */
const JOB_ATTEMPTS = 3;
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

@Injectable()
export class GenerationsService {
  private readonly logger = new Logger(GenerationsService.name);

  constructor(
    @InjectQueue(QueueName.Generation) private readonly queue: Queue,
    private readonly generations: GenerationsRepository,
    private readonly waiter: CompletionWaiter,
  ) {}

  /** Records the request, then queues it with the generation id as job id. */
  async create(dto: CreateGenerationDto, origin: JobOrigin = 'interactive') {
    const spec = engineSpec(dto.engine);
    const payload: GenerateJobPayload = {
      generationId: `gen_${randomUUID().replace(/-/g, '')}`,
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
      acceptedAt: Date.now(),
    };
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
      await this.generations.markFailed(record.id, { code: 'queue_unavailable', message: (err as Error).message, field: null });
      this.logger.error(`queueing ${record.id} failed: ${(err as Error).message}`);
      throw new ServiceUnavailableException('the job queue is unavailable; retry shortly');
    }
    return record;
  }

  /** The record once it is terminal (succeeded, failed, cancelled), or null if `timeoutMs` passes first. */
  async waitForTerminal(id: string, timeoutMs: number) {
    let latest: Awaited<ReturnType<GenerationsRepository['findById']>> = null;
    const done = await this.waiter.waitUntil(
      id,
      async () => {
        latest = await this.generations.findById(id);
        return !!latest && TERMINAL.has(latest.status);
      },
      timeoutMs,
    );
    return done ? latest : null;
  }

  async get(id: string) {
    const g = await this.generations.findById(id);
    if (!g) throw new NotFoundException(`generation ${id} not found`);
    return g;
  }
}
