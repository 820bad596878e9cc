import { Body, Controller, Get, HttpCode, Param, Post, Query, Req, Res, UseFilters, UseGuards } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { AdminApiAuthFilter } from './admin-exception.filters';
import {
  CleanQueueDto,
  ImageQueryDto,
  JobSearchQueryDto,
  QueueJobsQueryDto,
  SandboxRunFormDto,
  SandboxRunsQueryDto,
  type AdminPrincipal,
  type BatchDetail,
  type BatchSummary,
  type JobDetail,
  type JobListPage,
  type QueueJobPage,
  type QueueSummary,
  type SandboxRunDetail,
  type SandboxRunPage,
  type WorkerView,
} from './admin.dto';
import { AdminGuard, type AdminRequest } from './auth/admin.guard';
import { BatchAdminService } from './batches/batch-admin.service';
import { JobAdminService } from './jobs/job-admin.service';
import { QueueAdminService } from './queues/queue-admin.service';
import { SandboxAdminService } from './sandbox/sandbox-admin.service';
import { WorkerStatusReader } from './workers/worker-status.reader';
import { Public } from '../auth/api-key.guard';

/** Where a plain form post (no script) goes back to: the page it came from, if it is ours. */
function backTo(req: Request, fallback: string): string {
  try {
    const referer = new URL(req.get('referer') ?? '');
    if (referer.host === req.get('host') && referer.pathname.startsWith('/admin')) return referer.pathname + referer.search;
  } catch {
    // no usable referer
  }
  return fallback;
}

/**
 * Answers an action: JSON for scripts (and the page script, which asks for it), a 303 back to the
 * page for a browser's own form submission.
 */
function answer(req: Request, res: Response, body: Record<string, unknown> & { message: string }, redirect?: string): void {
  const target = redirect ?? backTo(req, '/admin');
  if ((req.get('accept') ?? '').includes('text/html')) res.redirect(303, target);
  else res.status(200).json({ ...body, ...(redirect ? { redirect } : {}) });
}

/** The dashboard's JSON API: the same figures the pages show, and every action they offer. */
@ApiExcludeController()
// The API-key guard stands aside: the dashboard has its own (sessions, admin and readonly keys).
@Public()
@Controller('admin/api')
@UseGuards(AdminGuard)
@UseFilters(AdminApiAuthFilter)
export class AdminApiController {
  constructor(
    private readonly queues: QueueAdminService,
    private readonly workers: WorkerStatusReader,
    private readonly jobs: JobAdminService,
    private readonly sandbox: SandboxAdminService,
    private readonly batches: BatchAdminService,
  ) {}

  @Get('session')
  session(@Req() req: AdminRequest): Omit<AdminPrincipal, 'csrfToken'> {
    const { user, role, via } = req.admin!;
    return { user, role, via };
  }

  // ---- queues

  @Get('queues')
  queueSummaries(): Promise<QueueSummary[]> {
    return this.queues.summaries();
  }

  @Get('queues/:name/jobs')
  queueJobs(@Param('name') name: string, @Query() q: QueueJobsQueryDto): Promise<QueueJobPage> {
    return this.queues.jobs(name, q.state ?? 'waiting', q.page ?? 1);
  }

  @Post('queues/:name/pause')
  @HttpCode(200)
  async pause(@Param('name') name: string, @Req() req: Request, @Res() res: Response) {
    await this.queues.pause(name);
    answer(req, res, { queue: name, paused: true, message: `queue ${name} paused` });
  }

  @Post('queues/:name/resume')
  @HttpCode(200)
  async resume(@Param('name') name: string, @Req() req: Request, @Res() res: Response) {
    await this.queues.resume(name);
    answer(req, res, { queue: name, paused: false, message: `queue ${name} resumed` });
  }

  @Post('queues/:name/retry-failed')
  @HttpCode(200)
  async retryFailed(@Param('name') name: string, @Req() req: Request, @Res() res: Response) {
    const r = await this.queues.retryFailed(name);
    answer(req, res, { queue: name, ...r, message: `${r.requeued} job(s) back in the queue, ${r.resubmitted} submitted again as new generations` });
  }

  @Post('queues/:name/clean')
  @HttpCode(200)
  async clean(@Param('name') name: string, @Body() body: CleanQueueDto, @Req() req: Request, @Res() res: Response) {
    const r = await this.queues.clean(name, body.state, body.olderThanMinutes);
    answer(req, res, { queue: name, ...r, message: `${r.removed} ${body.state} job(s) removed from queue ${name}` });
  }

  @Post('queues/:name/jobs/:id/remove')
  @HttpCode(200)
  async removeJob(@Param('name') name: string, @Param('id') id: string, @Req() req: Request, @Res() res: Response) {
    await this.queues.remove(name, id);
    answer(req, res, { queue: name, id, message: `job ${id} removed from queue ${name}` });
  }

  // ---- workers

  @Get('workers')
  workerList(): Promise<WorkerView[]> {
    return this.workers.list();
  }

  // ---- jobs

  @Get('jobs')
  searchJobs(@Query() q: JobSearchQueryDto): Promise<JobListPage> {
    return this.jobs.search(q);
  }

  @Get('jobs/:id')
  job(@Param('id') id: string): Promise<JobDetail> {
    return this.jobs.detail(id);
  }

  @Get('jobs/:id/image')
  async image(@Param('id') id: string, @Query() q: ImageQueryDto, @Res() res: Response) {
    const png = await this.jobs.image(id, q.index ?? 0);
    // A stored image never changes; only this browser may keep it.
    res.status(200).type('image/png').set('Cache-Control', 'private, max-age=86400, immutable').send(png);
  }

  @Post('jobs/:id/cancel')
  @HttpCode(200)
  async cancel(@Param('id') id: string, @Req() req: Request, @Res() res: Response) {
    const status = await this.jobs.cancel(id);
    answer(req, res, { id, status, message: status === 'cancelled' ? `${id} cancelled` : `${id} is stopping at its next step` });
  }

  @Post('jobs/:id/retry')
  @HttpCode(200)
  async retry(@Param('id') id: string, @Req() req: Request, @Res() res: Response) {
    const created = await this.jobs.retry(id);
    answer(req, res, { id: created.id, retryOf: id, message: `submitted again as ${created.id}` }, `/admin/jobs/${created.id}`);
  }

  // ---- sandbox

  @Get('sandbox-runs')
  sandboxRuns(@Query() q: SandboxRunsQueryDto): Promise<SandboxRunPage> {
    return this.sandbox.list(q.older);
  }

  @Post('sandbox-runs')
  @HttpCode(200)
  async startSandboxRun(@Body() body: SandboxRunFormDto, @Req() req: Request, @Res() res: Response) {
    const { id } = await this.sandbox.start(body);
    answer(req, res, { id, message: `sandbox run ${id} started` }, `/admin/sandbox/${id}`);
  }

  @Get('sandbox-runs/:id')
  sandboxRun(@Param('id') id: string): Promise<SandboxRunDetail> {
    return this.sandbox.detail(id);
  }

  // ---- batches

  @Get('batches')
  batchList(): Promise<BatchSummary[]> {
    return this.batches.list();
  }

  @Get('batches/:id')
  batch(@Param('id') id: string): Promise<BatchDetail> {
    return this.batches.detail(id);
  }

  @Post('batches/:id/cancel')
  @HttpCode(200)
  async cancelBatch(@Param('id') id: string, @Req() req: Request, @Res() res: Response) {
    const r = await this.batches.cancel(id);
    answer(req, res, { id, ...r, message: `batch ${id} cancelled: ${r.cancelled} queued item(s) removed, ${r.cancelling} running item(s) stopping` });
  }
}
