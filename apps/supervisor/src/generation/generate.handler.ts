import { Inject, Injectable, Logger } from '@nestjs/common';
import {
  appendGenerationEvent,
  InvalidJobPayloadError,
  JobName,
  parseGenerateJob,
  type GenerateJobPayload,
  type GenerateJobProgress,
  type GenerateJobResult,
  type GenerationEvent,
  type RawImageRef,
  type ResultMessage,
} from '@flexy/contracts';
import { APP_CONFIG, REDIS, reportRedisError, type AppConfig } from '@flexy/config';
import { engineSpec, jobDeadlineMs } from '@flexy/engines';
import { GenerationLifecycle } from '@flexy/generations';
import { IMAGE_STORE, ImageStore, type StoredImage } from '@flexy/storage';
import { UnrecoverableError, WaitingError, type Job } from 'bullmq';
import type Redis from 'ioredis';
import sharp from 'sharp';
import { OnJob } from '../jobs/on-job.decorator';
import type { InterruptReason } from '../jobs/queue-worker.service';
import { WorkerPool } from '../workers/worker-pool.service';
import { WorkerInterruptedError, WorkerLostError, type RawImage, type WorkerProcess } from '../workers/worker-process';
import { encodePng } from './png-encoder';

const PREVIEW_EVERY_STEPS = 4;
/** Between tries to store a finished image: doubling from the first to the last. */
const STORE_RETRY_FIRST_MS = 1000;
const STORE_RETRY_MAX_MS = 30_000;

/** The image store kept failing for IMAGE_STORE_RETRY_MS: an infrastructure failure, not the request's. */
class StorageUnavailableError extends Error {}

/**
 * Runs one generation: hands it to an idle Python worker, encodes what comes back as PNG with the
 * parameters embedded and stores it; every transition of the record (start, requeue, settle) goes
 * through the GenerationLifecycle. Safe to run twice for the same job id (at-least-once delivery): a
 * finished record is left alone and image files are keyed by job id.
 */
@Injectable()
export class GenerateHandler {
  private readonly logger = new Logger(GenerateHandler.name);

  constructor(
    private readonly pool: WorkerPool,
    private readonly lifecycle: GenerationLifecycle,
    @Inject(IMAGE_STORE) private readonly images: ImageStore,
    @Inject(REDIS) private readonly redis: Redis,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
  ) {}

  @OnJob(JobName.Generate)
  async handle(job: Job, token?: string, signal?: AbortSignal): Promise<GenerateJobResult> {
    let payload: GenerateJobPayload;
    try {
      payload = parseGenerateJob(job.data);
    } catch (err) {
      if (!(err instanceof InvalidJobPayloadError)) throw err;
      const id = typeof job.data?.generationId === 'string' ? job.data.generationId : job.id!;
      await this.lifecycle.refuseJob(id, err.message).catch(() => undefined);
      throw new UnrecoverableError(err.message);
    }
    const id = payload.generationId;
    const settled = await this.lifecycle.admit(payload);
    if (settled) return settled;
    if (signal?.aborted) return this.giveBack(job, token, id, signal.reason);
    // Fetched just as this host's last worker went down: another host can start it sooner.
    if (this.pool.servingCount() === 0) return this.giveBack(job, token, id, 'shutdown', 'no worker of this host is serving');

    let worker: WorkerProcess;
    try {
      worker = await this.pool.acquire(payload.engine, signal);
    } catch {
      return this.giveBack(job, token, id, signal?.reason);
    }
    // Taken back (shutdown, lost lock): the worker answers `interrupted`, never `cancelled`.
    const onInterrupt = () => worker.interrupt(id);
    signal?.addEventListener('abort', onInterrupt, { once: true });
    const queueWaitMs = Date.now() - payload.acceptedAt;
    // Heartbeats catch a dead or frozen process; a live one stuck in a kernel is caught here.
    const deadlineMs = jobDeadlineMs(engineSpec(payload.engine), payload.params);
    const deadline = setTimeout(() => worker.kill(`job ${id} passed its ${deadlineMs} ms deadline`), deadlineMs);
    let released = false;
    const releaseWorker = () => {
      clearTimeout(deadline);
      if (!released) this.pool.release(worker);
      released = true;
    };
    try {
      // Concurrent, since every job pays for them. A cancel may have come while the job waited for a worker.
      const [running, references] = await Promise.all([this.lifecycle.start(payload, worker.id), this.loadReferences(payload.references)]);
      if (!running) return { generationId: id, status: 'cancelled', imageCount: 0 };
      const outcome = await worker.run(
        {
          type: 'generate',
          job_id: id,
          engine: payload.engine,
          ...payload.params,
          references: references.map((r) => r.ref),
          // Interactive clients watch previews; queued batch work does not pay for them.
          preview_every: payload.origin === 'batch' ? 0 : PREVIEW_EVERY_STEPS,
        },
        Buffer.concat(references.map((r) => r.pixels)),
        (progress, preview) => {
          const data: GenerateJobProgress = { step: progress.step, totalSteps: progress.total_steps, workerId: worker.id };
          void job.updateProgress(data as unknown as object).catch(() => undefined);
          void this.event(id, { type: 'progress', step: progress.step, total_steps: progress.total_steps });
          if (preview && progress.preview) void this.publishPreview(id, progress.step, progress.preview, preview);
        },
      );
      // The images are in memory now: storing them (which may have to wait for the image store) needs no worker.
      releaseWorker();
      if (signal?.aborted) {
        // Finished before the interrupt took effect: keep the result (the write is idempotent).
        if (outcome.result.status === 'succeeded') {
          const done = await this.record(job, payload, outcome.result, outcome.images, queueWaitMs, signal);
          if (signal.reason !== ('lock-lost' satisfies InterruptReason)) return done;
        }
        return await this.giveBack(job, token, id, signal.reason);
      }
      return await this.record(job, payload, outcome.result, outcome.images, queueWaitMs, signal);
    } catch (err) {
      if (err instanceof UnrecoverableError || err instanceof WaitingError) throw err;
      if (signal?.aborted) return this.giveBack(job, token, id, signal.reason);
      // Stopping is not cancelling: a worker stopped from outside (its own SIGTERM, a service stop
      // that reached it) did not finish the job, and the job goes back without using an attempt.
      if (err instanceof WorkerInterruptedError) return this.giveBack(job, token, id, 'shutdown', err.message);
      const code = err instanceof WorkerLostError ? 'worker_lost' : 'internal';
      this.logger.warn(`${id} attempt ${job.attemptsMade + 1} failed: ${(err as Error).message}`);
      await this.lifecycle.failAttempt(payload, { code, message: (err as Error).message, field: null }, this.attemptOf(job));
      throw err;
    } finally {
      signal?.removeEventListener('abort', onInterrupt);
      releaseWorker();
    }
  }

  /**
   * Ends this supervisor's part in a job without finishing it. After a lost lock the job may already
   * be another supervisor's: nothing here touches it, and BullMQ's stalled-job check puts it back if
   * nobody holds it. Otherwise (shutdown, no serving worker) it goes back to the queue at the front
   * of its priority, without using up an attempt.
   */
  private async giveBack(job: Job, token: string | undefined, id: string, reason: unknown, detail?: string): Promise<never> {
    if (reason === ('lock-lost' satisfies InterruptReason)) {
      this.logger.warn(`${id}: lock lost; leaving the job to the stalled-job check`);
      // WaitingError tells BullMQ the job is no longer this worker's to finish.
      throw new WaitingError(`${id}: lock lost`);
    }
    await this.lifecycle.requeue(id);
    try {
      await job.moveToWait(token);
      this.logger.log(`${id} put back in the queue: ${detail ?? 'the supervisor is shutting down'}`);
    } catch (err) {
      this.logger.warn(`${id} could not be put back (${(err as Error).message}); the stalled-job check will`);
    }
    throw new WaitingError(`${id}: put back in the queue`);
  }

  /** Reference images as raw RGB for the worker (the pipe carries pixels, not encoded files). */
  private loadReferences(paths: string[]): Promise<Array<{ ref: RawImageRef; pixels: Buffer }>> {
    return Promise.all(
      paths.map(async (path) => {
        const { data, info } = await sharp(await this.images.read(path)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
        return { ref: { width: info.width, height: info.height, channels: 3 as const, byte_length: data.length }, pixels: data };
      }),
    );
  }

  private attemptOf(job: Job): { made: number; max: number } {
    return { made: job.attemptsMade, max: job.opts.attempts ?? 1 };
  }

  /**
   * Stores one finished image. A failing image store (full, read-only, an NFS mount gone) is the
   * infrastructure's trouble, not the request's: the image stays in memory and storing is retried
   * with a backoff for IMAGE_STORE_RETRY_MS (the job keeps its lock meanwhile, so nothing runs it
   * again), and only then does the job fail as storage_unavailable. An interrupt (shutdown, lost
   * lock) ends the wait; the job is then handed back.
   */
  private async store(id: string, index: number, data: Buffer, signal: AbortSignal | undefined): Promise<StoredImage> {
    const giveUpAt = Date.now() + this.config.imageStoreRetryMs;
    let delay = STORE_RETRY_FIRST_MS;
    let failures = 0;
    for (;;) {
      try {
        const stored = await this.images.put(id, index, 'png', data);
        if (failures) this.logger.log(`${id}: image ${index} stored after ${failures} failed tries`);
        return stored;
      } catch (err) {
        failures++;
        const why = (err as Error).message;
        if (Date.now() + delay > giveUpAt) throw new StorageUnavailableError(`the image store failed for ${Math.round(this.config.imageStoreRetryMs / 1000)} s (${failures} tries): ${why}`);
        if (failures === 1) this.logger.warn(`${id}: storing image ${index} failed (${why}); retrying for up to ${Math.round(this.config.imageStoreRetryMs / 1000)} s, the image kept in memory`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
        });
        if (signal?.aborted) throw err;
        delay = Math.min(delay * 2, STORE_RETRY_MAX_MS);
      }
    }
  }

  private async record(job: Job, p: GenerateJobPayload, result: ResultMessage, raw: RawImage[], queueWaitMs: number, signal?: AbortSignal): Promise<GenerateJobResult> {
    const id = p.generationId;
    if (result.status === 'cancelled') {
      await this.lifecycle.cancelled(p);
      return { generationId: id, status: 'cancelled', imageCount: 0 };
    }
    if (result.status === 'failed') {
      const error = result.error ?? { code: 'internal' as const, message: 'worker reported failure without detail', field: null };
      const next = await this.lifecycle.failAttempt(p, error, this.attemptOf(job));
      if (next === 'failed') throw new UnrecoverableError(`${error.code}: ${error.message}`);
      throw new Error(`${error.code}: ${error.message}`);
    }

    const encodeStart = performance.now();
    const storing = Promise.all(
      raw.map(async (image) => {
        const png = await encodePng(image, {
          prompt: p.params.prompt,
          negative_prompt: p.params.negative_prompt ?? '',
          engine: p.engine,
          seed: String(p.params.seed),
          steps: String(p.params.steps),
          guidance: String(p.params.guidance),
          size: `${p.params.width}x${p.params.height}`,
          model_revision: result.model_revision ?? '',
          weights: result.weights ?? '',
          generation_id: id,
        });
        const file = await this.store(id, image.index, png.data, signal);
        return { index: image.index, path: file.path, format: 'png', width: image.ref.width, height: image.ref.height, bytes: file.bytes, sha256: png.sha256 };
      }),
    );
    let stored: Awaited<typeof storing>;
    try {
      stored = await storing;
    } catch (err) {
      if (!(err instanceof StorageUnavailableError)) throw err;
      await this.lifecycle.failAttempt(p, { code: 'storage_unavailable', message: err.message, field: null }, this.attemptOf(job));
      throw new UnrecoverableError(`storage_unavailable: ${err.message}`);
    }
    const encodeStoreMs = performance.now() - encodeStart;
    const t = result.timings;
    await this.lifecycle.succeed(p, {
      weights: result.weights ?? 'demo',
      modelRevision: result.model_revision ?? null,
      timings: {
        queueWaitMs,
        loadMs: t.load_ms,
        textEncodeMs: t.text_encode_ms,
        denoiseMs: t.denoise_ms,
        decodeMs: t.decode_ms,
        encodeStoreMs,
        totalMs: Date.now() - p.acceptedAt,
      },
      images: stored,
    });
    return { generationId: id, status: 'succeeded', imageCount: stored.length };
  }

  private event(id: string, event: GenerationEvent): Promise<void> {
    // While Redis is away every step's event fails alike: one line per outage, not one per step.
    return appendGenerationEvent(this.redis, id, event).catch((err: Error) => reportRedisError(err, 'generation events'));
  }

  private async publishPreview(id: string, step: number, ref: { width: number; height: number }, pixels: Buffer) {
    const png = await sharp(pixels, { raw: { width: ref.width, height: ref.height, channels: 3 } }).png().toBuffer();
    await this.event(id, { type: 'preview', step, width: ref.width, height: ref.height, image: `data:image/png;base64,${png.toString('base64')}` });
  }
}
