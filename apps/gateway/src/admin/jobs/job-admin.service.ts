import { BadRequestException, ConflictException, Injectable, NotFoundException } from '@nestjs/common';
import { GENERATION_ID_PATTERN, isTerminalStatus, QueueName, type GenerateJobProgress } from '@flexy/contracts';
import { dashboardPrincipal } from '@flexy/generations';
import { PrismaService, type ApiKey, type Generation, type GenerationImage } from '@flexy/persistence';
import type { JobDetail, JobListItem, JobListPage, JobSearchQueryDto, PhaseTiming } from '../admin.dto';
import { GatewayServices } from '../gateway-services';

const DEFAULT_PAGE_SIZE = 25;

type Row = Generation & { apiKey?: Pick<ApiKey, 'id' | 'name' | 'prefix'> | null };

interface Cursor {
  createdAt: Date;
  id: string;
}

function encodeCursor(row: Pick<Generation, 'createdAt' | 'id'>): string {
  return Buffer.from(JSON.stringify([row.createdAt.getTime(), row.id])).toString('base64url');
}

function decodeCursor(cursor: string): Cursor {
  try {
    const [t, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    if (typeof t === 'number' && Number.isFinite(t) && typeof id === 'string') return { createdAt: new Date(t), id };
  } catch {
    // reported below
  }
  throw new BadRequestException('invalid page cursor');
}

/** Images through the dashboard's own auth: the public image route may demand an API key. */
export const adminImageUrl = (id: string, index: number) => `/admin/api/jobs/${id}/image?index=${index}`;

/** A datetime-local value has no zone; the dashboard shows UTC, so it is read as UTC. */
function parseTime(value: string): Date {
  const withZone = /(Z|[+-]\d{2}:\d{2})$/.test(value) || !value.includes('T') ? value : `${value}Z`;
  const d = new Date(withZone.includes('T') ? withZone : `${withZone}T00:00:00Z`);
  if (Number.isNaN(d.getTime())) throw new BadRequestException(`invalid time ${value}`);
  return d;
}

export function phasesOf(g: Generation): PhaseTiming[] {
  const phases: PhaseTiming[] = [
    { phase: 'queue_wait', ms: g.queueWaitMs ?? 0 },
    { phase: 'load', ms: g.loadMs ?? 0 },
    { phase: 'text_encode', ms: g.textEncodeMs ?? 0 },
    { phase: 'denoise', ms: g.denoiseMs ?? 0 },
    { phase: 'decode', ms: g.decodeMs ?? 0 },
    { phase: 'encode_store', ms: g.encodeStoreMs ?? 0 },
  ];
  if (g.totalMs === null) return phases.some((p) => p.ms > 0) ? phases : [];
  // What the total holds beyond the measured phases: hand-offs between gateway, queue and worker.
  const other = g.totalMs - phases.reduce((sum, p) => sum + p.ms, 0);
  return [...phases, { phase: 'other', ms: Math.max(0, other) }];
}

export function listItem(g: Row): JobListItem {
  return {
    id: g.id,
    status: g.status,
    engine: g.engine,
    prompt: g.prompt,
    origin: g.origin,
    apiKey: g.apiKey ? { id: g.apiKey.id, name: g.apiKey.name, prefix: g.apiKey.prefix } : null,
    createdAt: g.createdAt.toISOString(),
    totalMs: g.totalMs,
    errorCode: g.errorCode,
  };
}

const apiKeySelect = { apiKey: { select: { id: true, name: true, prefix: true } } } as const;

/** The jobs page: generation records searched and paged in the database, one job's full story, cancel and retry. */
@Injectable()
export class JobAdminService {
  constructor(
    private readonly prisma: PrismaService,
    private readonly gateway: GatewayServices,
  ) {}

  /** Newest first, keyset-paged both ways, so a page costs the same however deep it is. */
  async search(query: JobSearchQueryDto): Promise<JobListPage> {
    const limit = query.limit ?? DEFAULT_PAGE_SIZE;
    const filters: object[] = [];
    if (query.q) filters.push(GENERATION_ID_PATTERN.test(query.q.trim()) ? { id: query.q.trim() } : { prompt: { contains: query.q } });
    if (query.engine) filters.push({ engine: query.engine });
    if (query.status) filters.push({ status: query.status });
    if (query.api_key) filters.push({ OR: [{ apiKeyId: query.api_key }, { apiKey: { prefix: query.api_key } }] });
    if (query.from) filters.push({ createdAt: { gte: parseTime(query.from) } });
    if (query.to) filters.push({ createdAt: { lte: parseTime(query.to) } });
    if (query.older && query.newer) throw new BadRequestException('give either older or newer, not both');

    const towardNewer = !!query.newer;
    const cursor = query.older ? decodeCursor(query.older) : query.newer ? decodeCursor(query.newer) : null;
    if (cursor) {
      const cmp = towardNewer ? 'gt' : 'lt';
      filters.push({ OR: [{ createdAt: { [cmp]: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { [cmp]: cursor.id } }] });
    }
    const order = towardNewer ? 'asc' : 'desc';
    const rows = (await this.prisma.client.generation.findMany({
      where: { AND: filters },
      orderBy: [{ createdAt: order }, { id: order }],
      take: limit + 1,
      include: apiKeySelect,
    })) as Row[];
    const more = rows.length > limit;
    const page = rows.slice(0, limit);
    if (towardNewer) page.reverse();
    const first = page[0];
    const last = page[page.length - 1];
    return {
      items: page.map(listItem),
      older: last && (towardNewer || more) ? encodeCursor(last) : null,
      newer: first && (towardNewer ? more : !!cursor) ? encodeCursor(first) : null,
    };
  }

  async detail(id: string): Promise<JobDetail> {
    const g = (await this.prisma.client.generation.findUnique({
      where: { id },
      include: { images: { orderBy: { index: 'asc' } }, ...apiKeySelect },
    })) as (Row & { images: GenerationImage[] }) | null;
    if (!g) throw new NotFoundException(`generation ${id} not found`);
    const job = await this.gateway.queue(QueueName.Generation).getJob(id);
    let queue: JobDetail['queue'] = null;
    if (job) {
      const progress = job.progress as Partial<GenerateJobProgress> | number;
      queue = {
        state: await job.getState(),
        attemptsMade: job.attemptsMade,
        progress:
          typeof progress === 'object' && typeof progress.step === 'number' && typeof progress.totalSteps === 'number'
            ? { step: progress.step, totalSteps: progress.totalSteps }
            : null,
      };
    }
    return {
      ...listItem(g),
      negativePrompt: g.negativePrompt,
      parameters: { seed: String(g.seed), steps: g.steps, guidance: g.guidance, width: g.width, height: g.height, numImages: g.numImages },
      weights: g.weights,
      modelRevision: g.modelRevision,
      workerId: g.workerId,
      attempts: g.attempts,
      startedAt: g.startedAt?.toISOString() ?? null,
      finishedAt: g.finishedAt?.toISOString() ?? null,
      phases: phasesOf(g),
      images:
        g.status === 'succeeded'
          ? g.images.map((img) => ({ index: img.index, url: adminImageUrl(g.id, img.index), width: img.width, height: img.height }))
          : [],
      error: g.errorCode ? { code: g.errorCode, message: g.errorMessage, field: g.errorField } : null,
      sandboxRunId: g.sandboxRunId,
      batchId: g.batchId,
      queue,
      cancellable: !isTerminalStatus(g.status),
      retryable: g.status === 'failed' || g.status === 'cancelled',
    };
  }

  /** The stored PNG of a succeeded generation. */
  async image(id: string, index: number): Promise<Buffer> {
    const img = await this.prisma.client.generationImage.findFirst({ where: { generationId: id, index, generation: { status: 'succeeded' } } });
    if (!img) throw new NotFoundException(`generation ${id} has no image ${index}`);
    return this.gateway.images.read(img.path);
  }

  /** The same cancel as DELETE /v1/generations/:id: removed at once if queued, stopped between two steps if running. */
  cancel(id: string): Promise<'cancelled' | 'cancelling'> {
    if (!GENERATION_ID_PATTERN.test(id)) throw new NotFoundException(`generation ${id} not found`);
    return this.gateway.lifecycle.cancel(dashboardPrincipal('admin'), id);
  }

  retry(id: string): Promise<{ id: string }> {
    if (!GENERATION_ID_PATTERN.test(id)) throw new NotFoundException(`generation ${id} not found`);
    return this.gateway.lifecycle.resubmit(dashboardPrincipal('admin'), id);
  }

}
