import { ConflictException, Inject, Injectable, Logger, NotFoundException, ServiceUnavailableException } from '@nestjs/common';
import {
  appendGenerationEvent,
  appendGenerationEvents,
  CANCEL_CHANNEL,
  cancelFlagKey,
  generationUrls,
  isTerminalStatus,
  JobName,
  ORIGIN_PRIORITY,
  type GenerateJobPayload,
  type GenerateJobResult,
  type GenerationEvent,
  type JobOrigin,
  type WebhookJobPayload,
} from '@flexy/contracts';
import { REDIS, reportRedisError } from '@flexy/config';
import {
  BatchesRepository,
  GenerationsRepository,
  SandboxRunsRepository,
  type Batch,
  type CreateGenerationInput,
  type GenerationFailure,
  type GenerationPage,
  type GenerationSuccess,
  type GenerationWithImages,
  type ListGenerationsQuery,
  type RunListQuery,
  type RunPage,
  type SandboxRunRecord,
  type TransitionOutcome,
  paramsOf,
} from '@flexy/persistence';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import type { Queue } from 'bullmq';
import type Redis from 'ioredis';
import {
  batchPlan,
  newBatchId,
  newGenerationId,
  newSandboxRunId,
  randomSeed,
  resolveOrRefuse,
  sandboxPlan,
  type BatchRequest,
  type GenerationRequest,
  type ResolvedParams,
  type SandboxRunRequest,
} from './generation-request';
import { GroupCommit, type UnitOutcome } from './group-commit';
import { IdempotencyService } from './idempotency.service';
import { assertMayWrite, ownerIdOf, scopeOf, type Principal } from './principal';
import { QuotaService } from './quota.service';
import { checkReferences, referencePaths, removeFiles, storeReferences } from './references';
import { GENERATION_QUEUE, WEBHOOK_QUEUE } from './tokens';

/** Attempts per job: the first run plus retries for worker loss or one out-of-memory. */
export const JOB_ATTEMPTS = 3;
const WEBHOOK_ATTEMPTS = 5;
/**
 * Error codes that retrying cannot fix: bad input, an engine its worker reports unavailable, and an
 * image store that stayed unavailable through the supervisor's own storage retries (minutes of them:
 * a BullMQ retry would only generate the image again to fail the same way).
 */
const FINAL_CODES = new Set(['bad_input', 'engine_unavailable', 'storage_unavailable']);
/** A generation the reconciler had to put back on the queue this many times is settled as failed: something keeps losing it. */
const MAX_REENQUEUES = 5;
/** BullMQ states in which a job is still on its way to a worker (or on one). */
const LIVE_JOB_STATES = new Set(['waiting', 'prioritized', 'active', 'delayed', 'waiting-children']);
const reenqueuesKey = (id: string) => `flexy:reenqueued:${id}`;
/** Retried once at most: a job that does it twice is likely its cause (and each poisoned context costs a restart). */
const ONCE_CODES = new Set(['oom', 'cuda_fatal']);

export interface AcceptOptions {
  origin?: JobOrigin;
  /** The caller's Idempotency-Key header. */
  idempotencyKey?: string;
}

/** What one retention call removed. */
export interface Expired {
  generations: number;
  sandboxRuns: number;
  batches: number;
}

export interface Accepted {
  id: string;
  /** True when an earlier request with the same Idempotency-Key created it. */
  replayed: boolean;
}

/** What settling needs to know about a generation: whose it is, who to notify, which group it is in. */
type SettleTarget = Pick<GenerateJobPayload, 'generationId' | 'apiKeyId' | 'webhookUrl' | 'sandboxRunId' | 'batchId'>;
type Ending = { status: 'succeeded' } | { status: 'failed'; error: GenerationFailure } | { status: 'cancelled' };

/** One caller's share of a group-commit round: a single create, a sandbox run's engines, or a batch's items. */
interface IntakeUnit {
  payloads: GenerateJobPayload[];
}

function targetOf(g: GenerationWithImages): SettleTarget {
  return { generationId: g.id, apiKeyId: g.apiKeyId, webhookUrl: g.webhookUrl, sandboxRunId: g.sandboxRunId, batchId: g.batchId };
}

function recordFor(p: GenerateJobPayload): CreateGenerationInput {
  return {
    id: p.generationId,
    engine: p.engine,
    params: p.params,
    origin: p.origin,
    sandboxRunId: p.sandboxRunId,
    batchId: p.batchId,
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

/** The event that reports a terminal status. */
function terminalEvent(id: string, ending: Ending): GenerationEvent {
  if (ending.status === 'succeeded') return { type: 'succeeded', image_url: generationUrls.image(id) };
  if (ending.status === 'failed') return { type: 'failed', error: { code: ending.error.code, message: ending.error.message, field: ending.error.field ?? null } };
  return { type: 'cancelled' };
}

function endingOf(g: GenerationWithImages): Ending | null {
  if (g.status === 'succeeded') return { status: 'succeeded' };
  if (g.status === 'cancelled') return { status: 'cancelled' };
  if (g.status === 'failed') return { status: 'failed', error: { code: g.errorCode ?? 'internal', message: g.errorMessage ?? '', field: g.errorField } };
  return null;
}

/**
 * The one owner of a generation's life. Every route (v1, PromptPics, sandbox runs, batches, admin)
 * and the supervisor's job handler go through here, and each transition does all of its side
 * effects together:
 *
 *   accept   validate, authorise, claim the idempotency key, charge the quota, store references,
 *            record (queued), emit `queued`, enqueue
 *   start    record running, emit `running` (or settle cancelled if a cancel came first)
 *   requeue  back to queued (a retry, a shutdown, a lost worker); never undoes a terminal state
 *   settle   succeeded | failed | cancelled: record, emit, release the quota slot, enqueue the
 *            webhook, finish the sandbox run or batch once all its members are terminal
 *
 * The database records what was promised; Redis delivers it. Every settle is safe to repeat.
 */
@Injectable()
export class GenerationLifecycle {
  private readonly logger = new Logger(GenerationLifecycle.name);
  private readonly intake = new GroupCommit<IntakeUnit, void>(
    (units) => this.writeRound(units),
    (unit) => unit.payloads.length,
  );

  constructor(
    @Inject(GENERATION_QUEUE) private readonly queue: Queue,
    @Inject(WEBHOOK_QUEUE) private readonly webhooks: Queue,
    private readonly generations: GenerationsRepository,
    private readonly sandboxRuns: SandboxRunsRepository,
    private readonly batches: BatchesRepository,
    @Inject(REDIS) private readonly redis: Redis,
    private readonly quota: QuotaService,
    private readonly idempotency: IdempotencyService,
    @Inject(IMAGE_STORE) private readonly images: ImageStore,
  ) {}

  // ---- accept ------------------------------------------------------------------------------------

  /** One generation: checked in full before anything is stored, charged, recorded, then queued. */
  async accept(principal: Principal, req: GenerationRequest, options: AcceptOptions = {}): Promise<Accepted> {
    assertMayWrite(principal);
    const references = req.references ?? [];
    const params = resolveOrRefuse(req, references.length);
    const checked = await checkReferences(references);
    return this.idempotency.once({
      key: options.idempotencyKey,
      ownerId: ownerIdOf(principal),
      resourceType: 'generation',
      body: req,
      newId: newGenerationId(),
      recorded: async (id) => (await this.generations.findById(id)) !== null,
      create: async (id) => {
        await this.quota.charge(principal.apiKey, [id], 'prompt');
        let paths: string[] = [];
        try {
          paths = await storeReferences(this.images, id, checked);
          const payload = this.payloadFor(params, ownerIdOf(principal), options.origin ?? 'interactive', id, { references: paths, webhookUrl: req.webhook_url ?? null });
          await this.intake.submit({ payloads: [payload] });
        } catch (err) {
          await this.quota.release(ownerIdOf(principal), [id]).catch(() => undefined);
          await removeFiles(this.images, paths);
          throw err;
        }
      },
    });
  }

  /** One prompt through several engines with one seed; an engine whose limits refuse a setting is skipped, not fatal. */
  async acceptSandboxRun(principal: Principal, req: SandboxRunRequest, options: AcceptOptions = {}): Promise<Accepted> {
    assertMayWrite(principal);
    const seed = req.seed ?? randomSeed();
    const plan = sandboxPlan(req, seed);
    return this.idempotency.once({
      key: options.idempotencyKey,
      ownerId: ownerIdOf(principal),
      resourceType: 'sandbox-run',
      body: req,
      newId: newSandboxRunId(),
      recorded: async (id) => (await this.sandboxRuns.find(id, scopeOf(principal))) !== null,
      create: async (runId) => {
        const payloads = plan.runnable.map((params) =>
          this.payloadFor(params, ownerIdOf(principal), 'sandbox', newGenerationId(), { sandboxRunId: runId }),
        );
        await this.quota.charge(principal.apiKey, payloads.map((p) => p.generationId), 'engines');
        try {
          await this.sandboxRuns.create({
            id: runId,
            prompt: req.prompt,
            params: { seed, steps: req.steps ?? null, guidance: req.guidance ?? null, width: req.width ?? null, height: req.height ?? null, skipped: plan.skipped },
            engines: plan.engines,
            apiKeyId: ownerIdOf(principal),
            finished: payloads.length === 0,
          });
          if (payloads.length) await this.intake.submit({ payloads });
        } catch (err) {
          await this.quota.release(ownerIdOf(principal), payloads.map((p) => p.generationId)).catch(() => undefined);
          throw err;
        }
      },
    });
  }

  /** prompts × engines × seeds at the lowest priority: all items or none. */
  async acceptBatch(principal: Principal, req: BatchRequest, options: AcceptOptions = {}): Promise<Accepted> {
    assertMayWrite(principal);
    const items = batchPlan(req);
    return this.idempotency.once({
      key: options.idempotencyKey,
      ownerId: ownerIdOf(principal),
      resourceType: 'batch',
      body: req,
      newId: newBatchId(),
      recorded: async (id) => (await this.batches.find(id, scopeOf(principal))) !== null,
      create: async (batchId) => {
        const payloads = items.map((params) =>
          this.payloadFor(params, ownerIdOf(principal), 'batch', newGenerationId(), { batchId, webhookUrl: req.webhook_url ?? null }),
        );
        await this.quota.charge(principal.apiKey, payloads.map((p) => p.generationId), 'prompts');
        try {
          await this.batches.create({ id: batchId, itemCount: payloads.length, apiKeyId: ownerIdOf(principal) });
          await this.intake.submit({ payloads });
        } catch (err) {
          await this.quota.release(ownerIdOf(principal), payloads.map((p) => p.generationId)).catch(() => undefined);
          throw err;
        }
      },
    });
  }

  /**
   * Runs a finished generation again (admin retry): a new generation with the same parameters, seed,
   * origin and owner. The old record keeps its outcome (results are never overwritten) and stays the
   * member of its sandbox run or batch. An admin's retry is not charged to the owner's quota.
   */
  async resubmit(principal: Principal, id: string): Promise<{ id: string }> {
    assertMayWrite(principal);
    const g = await this.get(principal, id);
    if (!isTerminalStatus(g.status) || g.status === 'succeeded') throw new ConflictException(`generation ${id} is ${g.status}; only failed or cancelled ones are retried`);
    const params = resolveOrRefuse({ engine: g.engine as ResolvedParams['engine'], ...paramsOf(g) });
    const payload = this.payloadFor(params, g.apiKeyId, g.origin, newGenerationId(), { webhookUrl: g.webhookUrl });
    await this.intake.submit({ payloads: [payload] });
    return { id: payload.generationId };
  }

  private payloadFor(
    params: ResolvedParams,
    ownerId: string | null,
    origin: JobOrigin,
    generationId: string,
    extra: Partial<Pick<GenerateJobPayload, 'references' | 'webhookUrl' | 'sandboxRunId' | 'batchId'>> = {},
  ): GenerateJobPayload {
    return {
      ...params,
      generationId,
      origin,
      references: extra.references ?? [],
      apiKeyId: ownerId,
      webhookUrl: extra.webhookUrl ?? null,
      sandboxRunId: extra.sandboxRunId ?? null,
      batchId: extra.batchId ?? null,
      acceptedAt: Date.now(),
    };
  }

  /**
   * One round of the group commit: concurrent creates share one database write, one events write and
   * one queue write. If the queue refuses, the records are failed rather than left claiming a job.
   */
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
        // A position only for single creates: the members of a run or batch wait behind interactive work anyway.
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
    const rowsOf = (unit: IntakeUnit) => unit.payloads.map(recordFor);
    const settle = (write: Promise<void>): Promise<UnitOutcome<void>> =>
      write.then(
        () => ({ ok: true as const, value: undefined }),
        (error: unknown) => ({ ok: false as const, error }),
      );
    const together = await settle(this.generations.createMany(units.flatMap(rowsOf)));
    if (together.ok || units.length === 1) return units.map(() => together);
    return Promise.all(units.map((unit) => settle(this.generations.createMany(rowsOf(unit)))));
  }

  private async failUnqueued({ payloads }: IntakeUnit, err: Error): Promise<ServiceUnavailableException> {
    const error = { code: 'queue_unavailable', message: err.message, field: null };
    for (const p of payloads) await this.settle(p, { status: 'failed', error }).catch(() => undefined);
    this.logger.error(`queueing ${payloads.length} job(s) failed: ${err.message}`);
    return new ServiceUnavailableException({ statusCode: 503, message: 'the job queue is unavailable; retry shortly', retry_after_s: 2 });
  }

  // ---- reads (scoped to the principal) ---------------------------------------------------------

  /** A generation its owner (or an admin) may see; 404 for anyone else, and for a deleted one. */
  async get(principal: Principal, id: string): Promise<GenerationWithImages> {
    const g = await this.generations.findVisible(id, scopeOf(principal));
    if (!g) throw new NotFoundException(`generation ${id} not found`);
    return g;
  }

  list(principal: Principal, query: Omit<ListGenerationsQuery, 'scope'>): Promise<GenerationPage> {
    return this.generations.list({ ...query, scope: scopeOf(principal) });
  }

  async getSandboxRun(principal: Principal, id: string): Promise<SandboxRunRecord> {
    const run = await this.sandboxRuns.find(id, scopeOf(principal));
    if (!run) throw new NotFoundException(`sandbox run ${id} not found`);
    return run;
  }

  listSandboxRuns(principal: Principal, query: Omit<RunListQuery, 'scope'>): Promise<RunPage<SandboxRunRecord>> {
    return this.sandboxRuns.list({ ...query, scope: scopeOf(principal) });
  }

  async getBatch(principal: Principal, id: string): Promise<Batch> {
    const batch = await this.batches.find(id, scopeOf(principal));
    if (!batch) throw new NotFoundException(`batch ${id} not found`);
    return batch;
  }

  listBatches(principal: Principal, query: Omit<RunListQuery, 'scope'>): Promise<RunPage<Batch>> {
    return this.batches.list({ ...query, scope: scopeOf(principal) });
  }

  /** The terminal event of a finished generation, rebuilt from its record (for streams that expired). */
  async finalEvent(id: string): Promise<GenerationEvent | null> {
    const g = await this.generations.findById(id);
    const ending = g && endingOf(g);
    return ending ? terminalEvent(id, ending) : null;
  }

  // ---- the owner's actions --------------------------------------------------------------------

  /**
   * Cancels a generation. A job still in the queue is removed and settled as cancelled at once; a
   * running one is flagged and signalled, and its worker stops between two steps.
   */
  async cancel(principal: Principal, id: string): Promise<'cancelled' | 'cancelling'> {
    assertMayWrite(principal);
    const g = await this.get(principal, id);
    if (isTerminalStatus(g.status)) throw new ConflictException(`generation ${id} is already ${g.status}`);
    return this.cancelOpen(g);
  }

  private async cancelOpen(g: GenerationWithImages): Promise<'cancelled' | 'cancelling'> {
    await this.redis.set(cancelFlagKey(g.id), '1', 'EX', 3600);
    const job = await this.queue.getJob(g.id);
    const state = job ? await job.getState() : 'unknown';
    if (job && ['waiting', 'prioritized', 'delayed', 'waiting-children'].includes(state)) {
      const removed = await job.remove().then(
        () => true,
        () => false, // taken by a worker in the meantime: fall through to the signal
      );
      if (removed) {
        await this.settle(targetOf(g), { status: 'cancelled' });
        return 'cancelled';
      }
    }
    await this.redis.publish(CANCEL_CHANNEL, g.id);
    return 'cancelling';
  }

  /** Cancels every member of a batch not yet finished; finished ones keep their results. */
  async cancelBatch(principal: Principal, id: string) {
    assertMayWrite(principal);
    const batch = await this.getBatch(principal, id);
    // Marked first: settling its last open member would otherwise mark the batch completed.
    await this.batches.markCancelled(id);
    const open = await this.generations.activeIds({ batchId: id });
    let cancelled = 0;
    let cancelling = 0;
    for (const genId of open) {
      const g = await this.generations.findById(genId);
      if (!g || isTerminalStatus(g.status)) continue; // finished meanwhile
      const outcome = await this.cancelOpen(g);
      if (outcome === 'cancelled') cancelled++;
      else cancelling++;
    }
    return { id, status: 'cancelled' as const, cancelled, cancelling, already_finished: batch.itemCount - open.length };
  }

  /**
   * Deletes a generation: it is hidden from every read at once and its images are removed. An
   * unfinished one is cancelled first: a queued one is gone at once ('deleted'); a running one
   * ('cancelling') stops within one step, and whatever its worker still stores is removed when it
   * settles. Repeating it is harmless.
   */
  async delete(principal: Principal, id: string): Promise<'deleted' | 'cancelling'> {
    assertMayWrite(principal);
    const scope = scopeOf(principal);
    let outcome = await this.generations.softDelete(id, scope);
    if (outcome === null) throw new NotFoundException(`generation ${id} not found`);
    if (outcome === 'active') {
      const g = await this.generations.findById(id);
      if (g && !isTerminalStatus(g.status) && (await this.cancelOpen(g)) === 'cancelling') {
        await this.generations.softDelete(id, scope, { evenIfActive: true });
        return 'cancelling';
      }
      outcome = await this.generations.softDelete(id, scope, { evenIfActive: true });
      if (outcome === null || outcome === 'active') return 'cancelling';
    }
    await removeFiles(this.images, [...outcome.imagePaths, ...referencePaths(this.images, id)]);
    return 'deleted';
  }

  /**
   * Retention: removes finished generations created before `cutoff`, with their files, at most
   * `limit` of them per call (callers loop in bounded batches). Once no full batch of generations is
   * left, the sandbox runs and batches they emptied go too, at most `limit` of each per call.
   */
  async expire(cutoff: Date, limit: number): Promise<Expired> {
    const expired = await this.generations.expired(cutoff, limit);
    let generations = 0;
    if (expired.length > 0) {
      // Files first: a crash between the two leaves a record without files, never files without a record.
      await removeFiles(this.images, expired.flatMap((g) => [...g.imagePaths, ...referencePaths(this.images, g.id)]));
      generations = await this.generations.purge(expired.map((g) => g.id));
    }
    if (expired.length === limit) return { generations, sandboxRuns: 0, batches: 0 };
    const [sandboxRuns, batches] = await Promise.all([this.sandboxRuns.purgeEmpty(cutoff, limit), this.batches.purgeEmpty(cutoff, limit)]);
    return { generations, sandboxRuns, batches };
  }

  // ---- the supervisor's transitions -----------------------------------------------------------

  /**
   * Before a delivered job runs: answers its result if it must not run (already terminal after an
   * earlier delivery, whose side effects are completed again; or cancelled while it waited), else null.
   */
  async admit(p: GenerateJobPayload): Promise<GenerateJobResult | null> {
    const id = p.generationId;
    const [existing, cancelRequested] = await Promise.all([this.generations.findById(id), this.redis.exists(cancelFlagKey(id))]);
    const ending = existing && endingOf(existing);
    if (existing && ending) {
      await this.afterSettle(p, ending);
      return { generationId: id, status: ending.status, imageCount: existing.images.length };
    }
    if (cancelRequested) {
      await this.settle(p, { status: 'cancelled' });
      return { generationId: id, status: 'cancelled', imageCount: 0 };
    }
    return null;
  }

  /** A worker took the job: running, unless a cancel arrived while it waited for one (then settled as cancelled). */
  async start(p: GenerateJobPayload, workerId: string): Promise<boolean> {
    const id = p.generationId;
    const [cancelledMeanwhile] = await Promise.all([
      this.redis.exists(cancelFlagKey(id)),
      this.generations.markRunning(id, workerId),
      this.emit(id, { type: 'running', worker_id: workerId }),
    ]);
    if (!cancelledMeanwhile) return true;
    await this.settle(p, { status: 'cancelled' });
    return false;
  }

  /** Back to queued: the job will run again (a retry, a shutdown, a lost worker). Never undoes a terminal state. */
  async requeue(id: string): Promise<void> {
    await this.generations.markQueued(id);
  }

  /** The images are stored: record the success and settle. */
  async succeed(p: GenerateJobPayload, success: GenerationSuccess): Promise<void> {
    const outcome = await this.generations.markSucceeded(p.generationId, success);
    await this.afterSettle(p, await this.storedEnding(p.generationId, outcome, { status: 'succeeded' }));
    // Deleted while it ran, and it finished before the cancel reached it: its files go now.
    const g = outcome === 'updated' ? await this.generations.findById(p.generationId) : null;
    if (g?.deletedAt) await removeFiles(this.images, [...g.images.map((i) => i.path), ...referencePaths(this.images, g.id)]);
  }

  /**
   * An attempt failed. Input errors and an unavailable engine are final; out of memory and a
   * poisoned context are retried once; anything else until the attempts run out. Answers whether
   * the job goes back to the queue ('retry') or is settled as failed ('failed').
   */
  async failAttempt(p: GenerateJobPayload, error: GenerationFailure, attempt: { made: number; max: number }): Promise<'retry' | 'failed'> {
    const last = attempt.made + 1 >= attempt.max;
    const onceAlready = ONCE_CODES.has(error.code) && attempt.made >= 1;
    if (FINAL_CODES.has(error.code) || onceAlready || last) {
      await this.settle(p, { status: 'failed', error });
      return 'failed';
    }
    await this.requeue(p.generationId);
    return 'retry';
  }

  /** A job whose payload cannot be read (corrupted in Redis): its record fails as bad input. */
  async refuseJob(id: string, message: string): Promise<void> {
    const g = await this.generations.findById(id);
    if (g) await this.settle(targetOf(g), { status: 'failed', error: { code: 'bad_input', message, field: null } });
  }

  /** The owner's cancel reached the running job and it stopped. */
  cancelled(p: GenerateJobPayload): Promise<void> {
    return this.settle(p, { status: 'cancelled' });
  }

  /** Records a terminal status (only out of queued/running), then every side effect of it. */
  private async settle(t: SettleTarget, ending: Exclude<Ending, { status: 'succeeded' }>): Promise<void> {
    const outcome =
      ending.status === 'failed' ? await this.generations.markFailed(t.generationId, ending.error) : await this.generations.markCancelled(t.generationId);
    await this.afterSettle(t, await this.storedEnding(t.generationId, outcome, ending));
  }

  /** The terminal status that holds: the one just written, or, if the record had already ended, the stored one. */
  private async storedEnding(id: string, outcome: TransitionOutcome, written: Ending): Promise<Ending> {
    if (outcome === 'updated') return written;
    const stored = await this.generations.findById(id);
    return (stored && endingOf(stored)) ?? written;
  }

  /**
   * The side effects of a terminal status, each safe to repeat (a redelivered job completes what a
   * crash interrupted): the client's event, the owner's quota slot, the webhook (deduplicated by job
   * id), and the run or batch it belongs to.
   */
  private async afterSettle(t: SettleTarget, ending: Ending): Promise<void> {
    const id = t.generationId;
    await Promise.all([
      this.emit(id, terminalEvent(id, ending)),
      this.quota.release(t.apiKeyId, [id]).catch((err: Error) => this.logger.warn(`quota release for ${id}: ${err.message}`)),
    ]);
    if (t.webhookUrl) {
      const webhook: WebhookJobPayload = { generationId: id, url: t.webhookUrl };
      await this.webhooks.add(JobName.DeliverWebhook, webhook, {
        jobId: `webhook-${id}`,
        attempts: WEBHOOK_ATTEMPTS,
        backoff: { type: 'exponential', delay: 1000 },
        removeOnComplete: { age: 24 * 3600 },
        removeOnFail: { age: 7 * 24 * 3600 },
      });
    }
    await this.finishGroup(t);
  }

  // ---- the reconciler's ------------------------------------------------------------------------

  /**
   * The database is the record, Redis the delivery. For a generation the database holds as queued or
   * running: leaves it alone while BullMQ has a live job for it; otherwise (Redis lost the job in a
   * crash between AOF fsyncs, a failover to a lagging replica, a flushed instance; or BullMQ failed it
   * past its stalled limit without the record being settled) puts it back on the queue under the same
   * job id, so two reconcilers, or a reconciler and the gateway, add it once. Safe to repeat.
   */
  async reconcile(g: GenerationWithImages): Promise<'live' | 'enqueued' | 'settled' | 'finished'> {
    const job = await this.queue.getJob(g.id);
    const state = job ? await job.getState() : 'missing';
    if (LIVE_JOB_STATES.has(state)) return 'live';
    // Read again: the job may have ended (and settled the record) since the scan read it.
    const current = await this.generations.findById(g.id);
    if (!current || endingOf(current)) return 'finished';
    const payload = await this.payloadOf(current);
    const times = await this.redis.incr(reenqueuesKey(g.id));
    await this.redis.expire(reenqueuesKey(g.id), 24 * 3600);
    if (times > MAX_REENQUEUES) {
      const error = { code: 'worker_lost', message: `lost from the queue ${times - 1} times (BullMQ job ${state}); not put back again`, field: null };
      await this.settle(payload, { status: 'failed', error });
      return 'settled';
    }
    if (job) await job.remove().catch(() => undefined); // a failed or completed job holds the id
    await this.generations.markQueued(g.id);
    await this.emit(g.id, { type: 'queued', position: null });
    const spec = jobFor(payload);
    await this.queue.add(spec.name, spec.data, spec.opts);
    this.logger.warn(`${g.id} was ${current.status} in the database with ${job ? `its BullMQ job ${state}` : 'no BullMQ job'}: put back on the queue`);
    return 'enqueued';
  }

  /**
   * Finishes the sandbox runs and batches still marked running whose members are all terminal (their
   * last member's settle was lost, or ran before the run was marked). Up to `limit` of each; answers
   * how many it finished.
   */
  async finishStaleGroups(limit: number): Promise<number> {
    const [runs, batches] = await Promise.all([this.sandboxRuns.running(limit), this.batches.running(limit)]);
    let finished = 0;
    for (const id of runs) {
      if ((await this.generations.activeIds({ sandboxRunId: id })).length === 0 && (await this.sandboxRuns.complete(id))) finished++;
    }
    for (const id of batches) {
      if ((await this.generations.activeIds({ batchId: id })).length === 0 && (await this.batches.complete(id))) finished++;
    }
    return finished;
  }

  /** The job payload of a recorded generation, as accept built it (references found in the image store). */
  private async payloadOf(g: GenerationWithImages): Promise<GenerateJobPayload> {
    const references: string[] = [];
    for (const path of referencePaths(this.images, g.id)) {
      if (await this.images.exists(path)) references.push(path);
      else break; // stored in order, all or none
    }
    return {
      generationId: g.id,
      engine: g.engine as GenerateJobPayload['engine'],
      params: paramsOf(g),
      origin: g.origin,
      references,
      apiKeyId: g.apiKeyId,
      sandboxRunId: g.sandboxRunId,
      batchId: g.batchId,
      webhookUrl: g.webhookUrl,
      acceptedAt: g.createdAt.getTime(),
    };
  }

  /** A sandbox run or batch is completed once none of its members is queued or running. */
  async finishGroup(t: Pick<SettleTarget, 'sandboxRunId' | 'batchId'>): Promise<void> {
    if (t.sandboxRunId && (await this.generations.activeIds({ sandboxRunId: t.sandboxRunId })).length === 0) await this.sandboxRuns.complete(t.sandboxRunId);
    if (t.batchId && (await this.generations.activeIds({ batchId: t.batchId })).length === 0) await this.batches.complete(t.batchId);
  }

  private emit(id: string, event: GenerationEvent): Promise<void> {
    return appendGenerationEvent(this.redis, id, event).catch((err: Error) => reportRedisError(err, 'generation events'));
  }
}
