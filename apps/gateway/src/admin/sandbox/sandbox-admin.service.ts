import { BadRequestException, Injectable } from '@nestjs/common';
import { QueueName, type GenerateJobProgress } from '@flexy/contracts';
import { PrismaService } from '@flexy/persistence';
import { isTerminalStatus } from '@flexy/contracts';
import { dashboardPrincipal } from '@flexy/generations';
import type { PhaseTiming, SandboxEngineResult, SandboxRunDetail, SandboxRunFormDto, SandboxRunPage } from '../admin.dto';
import { GatewayServices } from '../gateway-services';
import { adminImageUrl } from '../jobs/job-admin.service';

const PAGE_SIZE = 20;

type PublicTimings = Record<'queue_wait_ms' | 'load_ms' | 'text_encode_ms' | 'denoise_ms' | 'decode_ms' | 'encode_store_ms' | 'total_ms', number | null>;

function phasesFromTimings(t: PublicTimings | null): PhaseTiming[] {
  if (!t) return [];
  const phases: PhaseTiming[] = [
    { phase: 'queue_wait', ms: t.queue_wait_ms ?? 0 },
    { phase: 'load', ms: t.load_ms ?? 0 },
    { phase: 'text_encode', ms: t.text_encode_ms ?? 0 },
    { phase: 'denoise', ms: t.denoise_ms ?? 0 },
    { phase: 'decode', ms: t.decode_ms ?? 0 },
    { phase: 'encode_store', ms: t.encode_store_ms ?? 0 },
  ];
  const other = (t.total_ms ?? 0) - phases.reduce((s, p) => s + p.ms, 0);
  return [...phases, { phase: 'other', ms: Math.max(0, other) }];
}

/**
 * The sandbox page: starts comparison runs through the same SandboxService as /v1/sandbox-runs and
 * /nerd-sandbox, and reads them back with each engine's phases and live step progress.
 */
@Injectable()
export class SandboxAdminService {
  constructor(
    private readonly prisma: PrismaService,
    private readonly gateway: GatewayServices,
  ) {}

  async start(form: SandboxRunFormDto): Promise<{ id: string }> {
    return this.gateway.lifecycle.acceptSandboxRun(dashboardPrincipal('admin'), {
      prompt: form.prompt,
      engines: form.engines,
      seed: form.seed,
      steps: form.steps,
      guidance: form.guidance,
      width: form.width,
      height: form.height,
    });
  }

  async list(older?: string): Promise<SandboxRunPage> {
    let where = {};
    if (older) {
      const [t, id] = decode(older);
      where = { OR: [{ createdAt: { lt: new Date(t) } }, { createdAt: new Date(t), id: { lt: id } }] };
    }
    const rows = await this.prisma.client.sandboxRun.findMany({
      where,
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: PAGE_SIZE + 1,
      include: { generations: { select: { status: true } } },
    });
    const page = rows.slice(0, PAGE_SIZE);
    const last = page[page.length - 1];
    return {
      items: page.map((r) => ({
        id: r.id,
        prompt: r.prompt,
        engines: r.engines as unknown as string[],
        // The record is closed only by a waiting caller; the members tell the truth meanwhile.
        status: r.status === 'running' && r.generations.every((g) => isTerminalStatus(g.status)) ? 'completed' : r.status,
        createdAt: r.createdAt.toISOString(),
        finishedAt: r.finishedAt?.toISOString() ?? null,
      })),
      older: rows.length > PAGE_SIZE && last ? Buffer.from(JSON.stringify([last.createdAt.getTime(), last.id])).toString('base64url') : null,
    };
  }

  async detail(id: string): Promise<SandboxRunDetail> {
    const view = await this.gateway.sandbox.view(dashboardPrincipal('readonly'), id, { inlineImages: false });
    const queue = this.gateway.queue(QueueName.Generation);
    const results: SandboxEngineResult[] = await Promise.all(
      view.results.map(async (r) => {
        const generationId = 'generation_id' in r ? (r.generation_id as string) : null;
        let progress: SandboxEngineResult['progress'] = null;
        if (generationId && r.status === 'running') {
          const p = (await queue.getJob(generationId))?.progress as Partial<GenerateJobProgress> | undefined;
          if (p && typeof p === 'object' && typeof p.step === 'number' && typeof p.totalSteps === 'number') progress = { step: p.step, totalSteps: p.totalSteps };
        }
        return {
          engine: r.engine,
          status: r.status,
          generationId,
          imageUrl: generationId && r.image_url ? adminImageUrl(generationId, 0) : null,
          weights: 'weights' in r ? ((r.weights as string | null) ?? null) : null,
          totalMs: r.latency_ms,
          phases: phasesFromTimings(r.timings as PublicTimings | null),
          progress,
          error: r.error ? { code: r.error.code, message: r.error.message ?? null, field: r.error.field ?? null } : null,
        };
      }),
    );
    return {
      id: view.id,
      prompt: view.prompt,
      engines: view.results.map((r) => r.engine),
      status: view.status,
      seed: view.seed,
      createdAt: view.created_at.toISOString(),
      finishedAt: view.finished_at?.toISOString() ?? null,
      results,
    };
  }
}

function decode(cursor: string): [number, string] {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    if (typeof v[0] === 'number' && typeof v[1] === 'string') return [v[0], v[1]];
  } catch {
    // reported below
  }
  throw new BadRequestException('invalid page cursor');
}
