import { Injectable } from '@nestjs/common';
import { GenerationLifecycle, type Principal } from '@flexy/generations';
import { GenerationsRepository, type Batch } from '@flexy/persistence';
import { generationView } from '../generations/generation.view';

const PAGE_SIZE = 100;

/** How batches look to their owner: counts by status and a page of item results. Creating and cancelling are the lifecycle's. */
@Injectable()
export class BatchesService {
  constructor(
    private readonly lifecycle: GenerationLifecycle,
    private readonly generations: GenerationsRepository,
  ) {}

  async view(caller: Principal, id: string, cursor?: string) {
    const batch = await this.lifecycle.getBatch(caller, id);
    const counts = await this.generations.statusCounts({ batchId: id });
    const page = await this.generations.members({ batchId: id }, { after: cursor, take: PAGE_SIZE + 1 });
    const more = page.length > PAGE_SIZE;
    const items = page.slice(0, PAGE_SIZE).map((g) => {
      const v = generationView(g);
      return { id: v.id, engine: v.engine, prompt: v.parameters.prompt, seed: v.parameters.seed, status: v.status, image_url: v.image_url, error: v.error, timings: v.timings };
    });
    return { ...batchSummary(batch, counts.queued + counts.running === 0), counts, items, next_cursor: more ? items[items.length - 1].id : null };
  }
}

/** A batch's own fields, as lists and reads show them; `finished`: none of its items is queued or running. */
export function batchSummary(batch: Batch, finished?: boolean) {
  return {
    id: batch.id,
    // The record turns completed when its last item settles; a read in between already shows it.
    status: batch.status === 'running' && finished ? 'completed' : batch.status,
    item_count: batch.itemCount,
    created_at: batch.createdAt,
    finished_at: batch.finishedAt,
    cancelled_at: batch.cancelledAt,
  };
}
