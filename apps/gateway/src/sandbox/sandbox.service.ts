import { Inject, Injectable, NotFoundException } from '@nestjs/common';
import { ENGINE_IDS, engineParamErrors, engineSpec, type EngineId } from '@flexy/engines';
import { PrismaService } from '@flexy/persistence';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import { randomInt, randomUUID } from 'node:crypto';
import { generationView } from '../generations/generation.view';
import { GenerationsService, TERMINAL } from '../generations/generations.service';
import type { NerdSandboxDto } from '../promptpics/promptpics.dto';

interface SkippedEngine {
  engine: EngineId;
  error: { code: 'bad_input'; message: string; field: string };
}

/**
 * One prompt through several engines with the same seed and settings, each as its own queued
 * generation (sandbox priority). An engine whose limits refuse a setting is reported as skipped in
 * its own result; the rest of the run goes on.
 */
@Injectable()
export class SandboxService {
  constructor(
    private readonly prisma: PrismaService,
    private readonly generations: GenerationsService,
    @Inject(IMAGE_STORE) private readonly images: ImageStore,
  ) {}

  async create(dto: NerdSandboxDto) {
    const engines = dto.engines ?? [...ENGINE_IDS];
    const seed = dto.seed ?? randomInt(0, 0xffffffff);
    const id = `sbx_${randomUUID().replace(/-/g, '')}`;
    const skipped: SkippedEngine[] = [];
    const runnable: EngineId[] = [];
    for (const engine of engines) {
      const spec = engineSpec(engine);
      const params = { prompt: dto.prompt, numImages: 1, ...spec.defaults, ...definedSettings(dto) };
      const problem = engineParamErrors(spec, params)[0];
      if (problem) skipped.push({ engine, error: { code: 'bad_input', message: problem.message, field: problem.field } });
      else runnable.push(engine);
    }
    await this.prisma.client.sandboxRun.create({
      data: {
        id,
        prompt: dto.prompt,
        params: { seed, steps: dto.steps ?? null, guidance: dto.guidance ?? null, width: dto.width ?? null, height: dto.height ?? null, skipped } as never,
        engines: engines as never,
        status: runnable.length ? 'running' : 'completed',
        finishedAt: runnable.length ? null : new Date(),
      },
    });
    for (const engine of runnable) {
      await this.generations.create({ prompt: dto.prompt, engine, seed, ...definedSettings(dto) }, { origin: 'sandbox', sandboxRunId: id });
    }
    return { id };
  }

  /** The run's generations in engine order; 404 for an unknown run. */
  async members(id: string): Promise<Array<{ id: string; engine: string }>> {
    const run = await this.prisma.client.sandboxRun.findUnique({ where: { id }, include: { generations: { select: { id: true, engine: true } } } });
    if (!run) throw new NotFoundException(`sandbox run ${id} not found`);
    const order = run.engines as unknown as string[];
    return [...run.generations].sort((a, b) => order.indexOf(a.engine) - order.indexOf(b.engine));
  }

  /** Waits until every generation of the run is terminal (or the deadline passes). */
  async waitForRun(id: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const members = await this.prisma.client.generation.findMany({ where: { sandboxRunId: id }, select: { id: true } });
    for (const m of members) {
      const left = deadline - Date.now();
      if (left <= 0 || !(await this.generations.waitForTerminal(m.id, left))) return false;
    }
    await this.prisma.client.sandboxRun.updateMany({ where: { id, status: 'running' }, data: { status: 'completed', finishedAt: new Date() } });
    return true;
  }

  async view(id: string, { inlineImages }: { inlineImages: boolean }) {
    const run = await this.prisma.client.sandboxRun.findUnique({
      where: { id },
      include: { generations: { include: { images: true } } },
    });
    if (!run) throw new NotFoundException(`sandbox run ${id} not found`);
    const params = run.params as unknown as { seed: number; skipped: SkippedEngine[] };
    const byEngine = new Map(run.generations.map((g) => [g.engine, g]));
    const results = await Promise.all(
      (run.engines as unknown as EngineId[]).map(async (engine) => {
        const skip = params.skipped.find((s) => s.engine === engine);
        if (skip) return { engine, status: 'skipped', latency_ms: null, image: null, image_url: null, timings: null, error: skip.error };
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
    const done = results.every((r) => r.status === 'skipped' || TERMINAL.has(r.status));
    return {
      id: run.id,
      status: done ? 'completed' : run.status,
      prompt: run.prompt,
      seed: params.seed,
      results,
      created_at: run.createdAt,
      finished_at: run.finishedAt,
    };
  }
}

function definedSettings(dto: NerdSandboxDto) {
  const out: { steps?: number; guidance?: number; width?: number; height?: number } = {};
  for (const key of ['steps', 'guidance', 'width', 'height'] as const) if (dto[key] !== undefined) out[key] = dto[key];
  return out;
}
