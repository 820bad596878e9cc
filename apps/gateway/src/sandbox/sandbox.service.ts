import { Inject, Injectable } from '@nestjs/common';
import { isTerminalStatus } from '@flexy/contracts';
import { GenerationLifecycle, type Principal } from '@flexy/generations';
import { GenerationsRepository, type SandboxRunRecord } from '@flexy/persistence';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import { CompletionWaiter } from '../generations/completion-waiter.service';
import { generationView } from '../generations/generation.view';

/**
 * How sandbox runs look to their owner: each engine's result side by side (a skipped engine says
 * why), and waiting for a run to finish. Creating runs is the lifecycle's.
 */
@Injectable()
export class SandboxService {
  constructor(
    private readonly lifecycle: GenerationLifecycle,
    private readonly generations: GenerationsRepository,
    private readonly waiter: CompletionWaiter,
    @Inject(IMAGE_STORE) private readonly images: ImageStore,
  ) {}

  /** The run's generations in engine order (404 for an unknown run or another owner's). */
  async members(caller: Principal, id: string): Promise<Array<{ id: string; engine: string }>> {
    const run = await this.lifecycle.getSandboxRun(caller, id);
    return this.ordered(run, await this.generations.members({ sandboxRunId: id }));
  }

  /** Waits until every generation of the run is terminal (or the deadline passes). */
  async waitForRun(caller: Principal, id: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (const m of await this.members(caller, id)) {
      const left = deadline - Date.now();
      if (left <= 0 || !(await this.waiter.terminal(m.id, left))) return false;
    }
    return true;
  }

  async view(caller: Principal, id: string, { inlineImages }: { inlineImages: boolean }) {
    const run = await this.lifecycle.getSandboxRun(caller, id);
    const byEngine = new Map((await this.generations.members({ sandboxRunId: id })).map((g) => [g.engine, g]));
    const results = await Promise.all(
      run.engines.map(async (engine) => {
        const skip = run.params.skipped.find((s) => s.engine === engine);
        if (skip) return { engine, status: 'skipped', latency_ms: null, ...(inlineImages ? { image: null } : {}), image_url: null, timings: null, error: skip.error };
        const g = byEngine.get(engine)!;
        const view = generationView(g);
        const image = inlineImages && g.status === 'succeeded' && g.images[0] ? (await this.images.read(g.images[0].path)).toString('base64') : undefined;
        return {
          engine,
          generation_id: g.id,
          status: g.status,
          latency_ms: g.totalMs,
          ...(inlineImages ? { image: image ?? null } : {}),
          image_url: view.image_url,
          timings: view.timings,
          weights: g.weights,
          error: view.error,
        };
      }),
    );
    // The record turns completed when its last member settles; a read in between already shows it.
    const finished = results.every((r) => r.status === 'skipped' || isTerminalStatus(r.status));
    return { ...runSummary(run), status: run.status === 'running' && finished ? 'completed' : run.status, results };
  }

  private ordered<T extends { engine: string }>(run: SandboxRunRecord, members: T[]): T[] {
    return [...members].sort((a, b) => run.engines.indexOf(a.engine) - run.engines.indexOf(b.engine));
  }
}

/** A run's own fields, as lists and reads show them. */
export function runSummary(run: SandboxRunRecord) {
  return {
    id: run.id,
    status: run.status,
    prompt: run.prompt,
    seed: run.params.seed,
    engines: run.engines,
    created_at: run.createdAt,
    finished_at: run.finishedAt,
  };
}
