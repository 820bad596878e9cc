import { Controller, Get, Res } from '@nestjs/common';
import { ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import { ApiJson } from '../common/api-responses';
import { LivenessView, ReadinessView } from './health.view';
import type { Response } from 'express';
import { Public } from '../auth/api-key.guard';
import { StatusService } from '../status/status.service';
import { MetricsService } from './metrics.service';

@ApiTags('health')
@Public()
@Controller()
export class HealthController {
  constructor(
    private readonly status: StatusService,
    private readonly metricsService: MetricsService,
  ) {}

  /** Liveness: the process is up and its event loop answers. */
  @Get('health/live')
  @ApiOperation({ operationId: 'live', summary: 'Liveness' })
  @ApiJson(200, LivenessView, 'The process answers.')
  live() {
    return { status: 'ok' };
  }

  /**
   * Readiness: Redis and the database answer and at least one worker can take work. Each check has its
   * own timeout (about a second), so a stalled Redis or database gives a prompt 503 naming it.
   */
  @Get('health/ready')
  @ApiOperation({ operationId: 'ready', summary: 'Readiness' })
  @ApiJson(200, ReadinessView, 'Ready; the body lists each check (with its time), each worker and each engine\'s health.')
  @ApiJson(503, ReadinessView, 'Not ready; `checks` says which check failed, `details` why.')
  async ready(@Res() res: Response) {
    const { redis, database, workers } = await this.status.readiness();
    const checks = { redis: redis.ok, database: database.ok, workers: workers.ok };
    const ok = Object.values(checks).every(Boolean);
    res.status(ok ? 200 : 503).json({
      status: ok ? 'ready' : 'not_ready',
      checks,
      details: {
        redis: { ms: redis.ms, error: redis.error },
        database: { ms: database.ms, error: database.error },
        workers: { ms: workers.ms, error: workers.error },
      },
      workers: workers.statuses.map((w) => ({
        id: w.id,
        state: w.state,
        restarts: w.restarts,
        last_error: w.lastError,
        engines: w.engines.map((e) => ({ engine: e.engine, state: e.state, reason: e.reason, retry_at: e.retry_at })),
      })),
      engines: StatusService.engineHealth(workers.statuses),
    });
  }

  /** Prometheus text format (see MetricsService for where each series comes from). */
  @Get('metrics')
  @ApiOperation({ operationId: 'metrics', summary: 'Prometheus metrics' })
  @ApiResponse({ status: 200, description: 'Prometheus text exposition format.', content: { 'text/plain': { schema: { type: 'string' } } } })
  async metrics(@Res() res: Response) {
    const body = await this.metricsService.render();
    res.setHeader('Content-Type', this.metricsService.contentType);
    res.end(body); // as is: send() would rewrite the library's content type
  }
}
