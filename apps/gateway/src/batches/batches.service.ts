import { BadRequestException, Injectable, NotFoundException } from '@nestjs/common';
import { engineParamErrors, engineSpec } from '@flexy/engines';
import { PrismaService, type ApiKey } from '@flexy/persistence';
import { randomInt, randomUUID } from 'node:crypto';
import { badRequest } from '../common/validation';
import type { CreateGenerationDto } from '../generations/create-generation.dto';
import { generationView } from '../generations/generation.view';
import { GenerationsService } from '../generations/generations.service';
import { MAX_BATCH_ITEMS, type CreateBatchDto } from './create-batch.dto';

const PAGE_SIZE = 100;

/**
 * Batches: prompts × engines × seeds as generations at the lowest priority, so interactive work
 * and sandbox runs always go first. A batch is all-or-nothing at creation: every item is checked
 * against its engine's limits before anything is queued.
 */
@Injectable()
export class BatchesService {
  constructor(
    private readonly prisma: PrismaService,
    private readonly generations: GenerationsService,
  ) {}

  async create(dto: CreateBatchDto, apiKey: ApiKey | null) {
    const seeds = dto.seeds ?? [randomInt(0, 0xffffffff)];
    const count = dto.prompts.length * dto.engines.length * seeds.length;
    if (count > MAX_BATCH_ITEMS) {
      throw badRequest([{ field: 'prompts', message: `prompts × engines × seeds must be at most ${MAX_BATCH_ITEMS} items (got ${count})` }]);
    }
    for (const engine of dto.engines) {
      const spec = engineSpec(engine);
      const longest = dto.prompts.reduce((a, b) => (b.length > a.length ? b : a), '');
      const problems = engineParamErrors(spec, {
        prompt: longest,
        negativePrompt: dto.negative_prompt ?? null,
        numImages: 1,
        steps: dto.steps ?? spec.defaults.steps,
        guidance: dto.guidance ?? spec.defaults.guidance,
        width: dto.width ?? spec.defaults.width,
        height: dto.height ?? spec.defaults.height,
      });
      if (problems.length) throw badRequest(problems);
    }
    const id = `bat_${randomUUID().replace(/-/g, '')}`;
    await this.prisma.client.batch.create({ data: { id, itemCount: count, apiKeyId: apiKey?.id ?? null, status: 'running' } });
    const items: CreateGenerationDto[] = [];
    for (const prompt of dto.prompts)
      for (const engine of dto.engines)
        for (const seed of seeds)
          items.push({ prompt, engine, seed, steps: dto.steps, guidance: dto.guidance, width: dto.width, height: dto.height, negative_prompt: dto.negative_prompt, webhook_url: dto.webhook_url });
    await this.generations.createMany(items, { origin: 'batch', batchId: id, apiKey });
    return id;
  }

  async view(id: string, cursor?: string) {
    const batch = await this.prisma.client.batch.findUnique({ where: { id } });
    if (!batch) throw new NotFoundException(`batch ${id} not found`);
    const grouped = await this.prisma.client.generation.groupBy({ by: ['status'], where: { batchId: id }, _count: { _all: true } });
    const counts = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const g of grouped) counts[g.status] = g._count._all;
    const page = await this.prisma.client.generation.findMany({
      where: { batchId: id, ...(cursor ? { id: { gt: cursor } } : {}) },
      orderBy: { id: 'asc' },
      take: PAGE_SIZE + 1,
      include: { images: true },
    });
    const more = page.length > PAGE_SIZE;
    const items = page.slice(0, PAGE_SIZE).map((g) => {
      const v = generationView(g);
      return { id: v.id, engine: v.engine, prompt: v.parameters.prompt, seed: v.parameters.seed, status: v.status, image_url: v.image_url, error: v.error, timings: v.timings };
    });
    const done = counts.queued + counts.running === 0;
    const status = batch.status === 'cancelled' ? 'cancelled' : done ? 'completed' : 'running';
    if (done && batch.status === 'running') {
      await this.prisma.client.batch.updateMany({ where: { id, status: 'running' }, data: { status: 'completed', finishedAt: new Date() } });
    }
    return {
      id,
      status,
      item_count: batch.itemCount,
      counts,
      items,
      next_cursor: more ? items[items.length - 1].id : null,
      created_at: batch.createdAt,
      finished_at: batch.finishedAt,
    };
  }

  /** Cancels every item not yet finished; finished ones keep their results. */
  async cancel(id: string) {
    const batch = await this.prisma.client.batch.findUnique({ where: { id } });
    if (!batch) throw new NotFoundException(`batch ${id} not found`);
    const open = await this.prisma.client.generation.findMany({ where: { batchId: id, status: { in: ['queued', 'running'] } }, select: { id: true } });
    let cancelled = 0;
    let cancelling = 0;
    for (const { id: genId } of open) {
      const outcome = await this.generations.cancel(genId).catch((err) => {
        if (err instanceof BadRequestException || err?.status === 409) return null; // finished meanwhile
        throw err;
      });
      if (outcome === 'cancelled') cancelled++;
      if (outcome === 'cancelling') cancelling++;
    }
    await this.prisma.client.batch.update({ where: { id }, data: { status: 'cancelled', cancelledAt: new Date() } });
    return { id, status: 'cancelled', cancelled, cancelling, already_finished: batch.itemCount - open.length };
  }
}

