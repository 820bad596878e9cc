import { Controller, Get, Param, Query, Req, Res, UseFilters, UseGuards } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { Response } from 'express';
import { ASSET_VERSION } from './admin-assets.controller';
import { AdminPageExceptionFilter } from './admin-exception.filters';
import { JobSearchQueryDto, LiveQueryDto, QueueJobsQueryDto, SandboxRunsQueryDto } from './admin.dto';
import { AdminGuard, type AdminRequest } from './auth/admin.guard';
import { BatchAdminService } from './batches/batch-admin.service';
import { JobAdminService } from './jobs/job-admin.service';
import { LiveRegions } from './live-regions.service';
import { QueueAdminService } from './queues/queue-admin.service';
import { SandboxAdminService } from './sandbox/sandbox-admin.service';
import { batchesLive, batchLive } from './views/batches.view';
import type { SafeHtml } from './views/html';
import { jobLive, jobsLive, jobsSearchForm } from './views/jobs.view';
import { page, type NavKey, type PageContext } from './views/layout';
import { queuesLive, queuesMaintenance } from './views/queues.view';
import { sandboxForm, sandboxRunLive, sandboxRunsLive } from './views/sandbox.view';
import { workersLive } from './views/workers.view';
import { WorkerStatusReader } from './workers/worker-status.reader';
import { Public } from '../auth/api-key.guard';

interface Screen {
  title: string;
  nav: NavKey | null;
  top?: (ctx: PageContext) => SafeHtml;
  bottom?: (ctx: PageContext) => SafeHtml;
  live: (ctx: PageContext) => Promise<SafeHtml>;
  /** How often the server re-renders the live region for an open stream. */
  everyMs: number;
}

/** The operator's pages: server-rendered HTML, each with a live region kept current over SSE. */
@ApiExcludeController()
// The API-key guard stands aside: the dashboard has its own (sessions, admin and readonly keys).
@Public()
@Controller('admin')
@UseGuards(AdminGuard)
@UseFilters(AdminPageExceptionFilter)
export class AdminPagesController {
  constructor(
    private readonly queues: QueueAdminService,
    private readonly workers: WorkerStatusReader,
    private readonly jobs: JobAdminService,
    private readonly sandbox: SandboxAdminService,
    private readonly batches: BatchAdminService,
    private readonly live: LiveRegions,
  ) {}

  @Get()
  home(@Res() res: Response) {
    res.redirect(303, '/admin/queues');
  }

  @Get('queues')
  queuesPage(@Req() req: AdminRequest, @Res() res: Response, @Query() q: QueueJobsQueryDto) {
    const state = q.state ?? 'waiting';
    return this.show(req, res, q, {
      title: 'Queues',
      nav: 'queues',
      everyMs: 1000,
      live: async (ctx) => {
        const summaries = await this.queues.summaries();
        const pages = new Map(await Promise.all(summaries.map(async (s) => [s.name, await this.queues.jobs(s.name, state, q.page ?? 1)] as const)));
        return queuesLive(ctx, summaries, pages);
      },
      bottom: (ctx) => queuesMaintenance(ctx, this.queues.names()),
    });
  }

  @Get('workers')
  workersPage(@Req() req: AdminRequest, @Res() res: Response, @Query() q: LiveQueryDto) {
    // A restart's short "restarting" phase lasts about a second; a half-second re-read catches it.
    return this.show(req, res, q, { title: 'Workers', nav: 'workers', everyMs: 500, live: async () => workersLive(await this.workers.list(), Date.now()) });
  }

  @Get('jobs')
  jobsPage(@Req() req: AdminRequest, @Res() res: Response, @Query() q: JobSearchQueryDto) {
    return this.show(req, res, q, {
      title: 'Jobs',
      nav: 'jobs',
      everyMs: 2000,
      top: () => jobsSearchForm(q),
      live: async () => jobsLive(q, await this.jobs.search(q)),
    });
  }

  @Get('jobs/:id')
  async jobPage(@Req() req: AdminRequest, @Res() res: Response, @Param('id') id: string, @Query() q: LiveQueryDto) {
    await this.jobs.detail(id); // 404 before a page or stream opens
    return this.show(req, res, q, { title: `Job ${id}`, nav: 'jobs', everyMs: 1000, live: async (ctx) => jobLive(ctx, await this.jobs.detail(id)) });
  }

  @Get('sandbox')
  sandboxPage(@Req() req: AdminRequest, @Res() res: Response, @Query() q: SandboxRunsQueryDto) {
    return this.show(req, res, q, {
      title: 'Sandbox',
      nav: 'sandbox',
      everyMs: 2000,
      top: (ctx) => sandboxForm(ctx),
      live: async () => sandboxRunsLive(await this.sandbox.list(q.older)),
    });
  }

  @Get('sandbox/:id')
  async sandboxRunPage(@Req() req: AdminRequest, @Res() res: Response, @Param('id') id: string, @Query() q: LiveQueryDto) {
    await this.sandbox.detail(id);
    return this.show(req, res, q, { title: 'Sandbox run', nav: 'sandbox', everyMs: 1000, live: async () => sandboxRunLive(await this.sandbox.detail(id)) });
  }

  @Get('batches')
  batchesPage(@Req() req: AdminRequest, @Res() res: Response, @Query() q: LiveQueryDto) {
    return this.show(req, res, q, { title: 'Batches', nav: 'batches', everyMs: 2000, live: async () => batchesLive(await this.batches.list()) });
  }

  @Get('batches/:id')
  async batchPage(@Req() req: AdminRequest, @Res() res: Response, @Param('id') id: string, @Query() q: LiveQueryDto) {
    await this.batches.detail(id);
    return this.show(req, res, q, { title: `Batch ${id}`, nav: 'batches', everyMs: 2000, live: async (ctx) => batchLive(ctx, await this.batches.detail(id)) });
  }

  /** The full page, its live region once (`?partial=1`), or the region as a stream (`?live=1`). */
  private async show(req: AdminRequest, res: Response, q: LiveQueryDto, screen: Screen): Promise<void> {
    const principal = req.admin!;
    const needsChrome = !q.live && !q.partial;
    const [hasBatches, workers] = needsChrome ? await Promise.all([this.batches.any(), this.workers.list()]) : [false, []];
    const ctx: PageContext = {
      principal,
      hasBatches,
      demoWeights: workers.some((w) => w.engines.some((e) => e.weights === 'demo')),
      assetVersion: ASSET_VERSION,
    };
    if (q.live) return this.live.stream(res, () => screen.live(ctx), screen.everyMs);
    const region = await screen.live(ctx);
    if (q.partial) {
      res.status(200).type('html').send(region.value);
      return;
    }
    res.status(200).type('html').send(page(ctx, { title: screen.title, nav: screen.nav, top: screen.top?.(ctx), bottom: screen.bottom?.(ctx), live: region }));
  }
}
