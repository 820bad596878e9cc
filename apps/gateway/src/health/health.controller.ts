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

  /** Readiness: Redis and the database answer and at least one worker can take work. */
  @Get('health/ready')
  @ApiOperation({ operationId: 'ready', summary: 'Readiness' })
  @ApiJson(200, ReadinessView, 'Ready; the body lists each check and each worker.')
  @ApiJson(503, ReadinessView, 'Not ready; `checks` says which check failed.')
  async ready(@Res() res: Response) {
    const [queue, database, workers] = await Promise.all([
      this.status.queueCounts().then(() => true, () => false),
      this.status.databaseOk(),
      this.status.workers().catch(() => []),
    ]);
    const serving = workers.filter((w) => w.state === 'ready' || w.state === 'busy');
    const checks = { redis: queue, database, workers: serving.length > 0 };
    const ok = Object.values(checks).every(Boolean);
    res.status(ok ? 200 : 503).json({
      status: ok ? 'ready' : 'not_ready',
      checks,
      workers: workers.map((w) => ({ id: w.id, state: w.state, restarts: w.restarts, last_error: w.lastError })),
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
