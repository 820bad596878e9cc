import { Controller, Get, Header, Res } from '@nestjs/common';
import { ApiOkResponse, ApiServiceUnavailableResponse, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { Public } from '../auth/api-key.guard';
import { StatusService } from '../status/status.service';

@ApiTags('health')
@Public()
@Controller()
export class HealthController {
  constructor(private readonly status: StatusService) {}

  /** Liveness: the process is up and its event loop answers. */
  @Get('health/live')
  live() {
    return { status: 'ok' };
  }

  /** Readiness: Redis and the database answer and at least one worker can take work. */
  @Get('health/ready')
  @ApiOkResponse({ description: 'Ready; the body lists each check and each worker.' })
  @ApiServiceUnavailableResponse({ description: 'Not ready; the body says which check failed.' })
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

  /** Prometheus text format. */
  @Get('metrics')
  @Header('Content-Type', 'text/plain; version=0.0.4')
  async metrics() {
    const lines: string[] = [];
    const metric = (name: string, help: string, type: 'gauge' | 'counter', samples: Array<[Record<string, string>, number]>) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of samples) {
        const l = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`).join(',');
        lines.push(`${name}${l ? `{${l}}` : ''} ${value}`);
      }
    };
    const [counts, workers, phases, generations] = await Promise.all([
      this.status.queueCounts().catch(() => ({}) as Record<string, number>),
      this.status.workers().catch(() => []),
      this.status.phaseMeans(),
      this.status.generationCounts(),
    ]);
    metric('flexy_queue_jobs', 'Jobs in the generation queue by state.', 'gauge', Object.entries(counts).map(([state, n]) => [{ queue: 'generation', state }, n]));
    metric('flexy_worker_up', 'Workers by published lifecycle state (1 = in that state).', 'gauge', workers.map((w) => [{ worker: w.id, state: w.state }, 1]));
    metric('flexy_worker_restarts', 'Restarts of each worker process since its supervisor started.', 'counter', workers.map((w) => [{ worker: w.id }, w.restarts]));
    metric('flexy_worker_device_bytes_used', 'Device memory held by resident engines.', 'gauge', workers.filter((w) => w.residency).map((w) => [{ worker: w.id }, w.residency!.device_bytes_used]));
    metric('flexy_worker_device_bytes_budget', 'Device memory budget of the worker.', 'gauge', workers.filter((w) => w.residency).map((w) => [{ worker: w.id }, w.residency!.device_budget_bytes]));
    metric('flexy_generation_phase_seconds_mean', 'Mean duration of each phase over the last hour, by engine.', 'gauge', phases.map((p) => [{ engine: p.engine, phase: p.phase }, p.seconds]));
    metric('flexy_generations', 'Generations recorded, by engine and status.', 'gauge', generations.map((g) => [{ engine: g.engine, status: g.status }, g._count._all]));
    return lines.join('\n') + '\n';
  }
}
