import { Injectable } from '@nestjs/common';
import { readWorkerStatuses, type WorkerStatus } from '@flexy/contracts';
import type { WorkerView } from '../admin.dto';
import { GatewayServices } from '../gateway-services';

/** Supervisors publish every 2 s; three missed reports mark a worker stale. */
const STALE_AFTER_MS = 6000;
/** Several open pages share one read of Redis. */
const CACHE_MS = 250;

export function workerView(s: WorkerStatus, now: number): WorkerView {
  const resident = new Map((s.residency?.engines ?? []).map((e) => [e.engine, e]));
  return {
    id: s.id,
    host: s.host,
    device: s.device,
    state: s.state,
    pid: s.pid,
    restarts: s.restarts,
    lastError: s.lastError,
    currentJob: s.currentJob ? { ...s.currentJob, canary: s.currentJob.id.startsWith('canary-') } : null,
    memory: s.residency ? { usedBytes: s.residency.device_bytes_used, budgetBytes: s.residency.device_budget_bytes } : null,
    engines: s.engines.map((e) => ({
      engine: e.engine,
      weights: e.weights,
      revision: e.revision,
      residentOn: resident.get(e.engine)?.location ?? null,
      bytes: resident.get(e.engine)?.bytes ?? null,
      // A report from a supervisor older than per-engine health has neither: it served them all.
      state: e.state ?? 'available',
      reason: e.reason ?? null,
      retryAt: e.retry_at ?? null,
    })),
    updatedAt: s.updatedAt,
    stale: now - s.updatedAt > STALE_AFTER_MS,
  };
}

/** Reads the per-worker status keys (`flexy:worker:<host>/<device>`) that every supervisor keeps fresh. */
@Injectable()
export class WorkerStatusReader {
  private cached: { at: number; value: Promise<WorkerView[]> } | null = null;

  constructor(private readonly gateway: GatewayServices) {}

  list(): Promise<WorkerView[]> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < CACHE_MS) return this.cached.value;
    const value = this.read(now);
    this.cached = { at: now, value };
    value.catch(() => (this.cached = null));
    return value;
  }

  private async read(now: number): Promise<WorkerView[]> {
    const statuses = await readWorkerStatuses(this.gateway.redis);
    return statuses.map((s) => workerView(s, now)).sort((a, b) => a.host.localeCompare(b.host) || a.device.localeCompare(b.device, undefined, { numeric: true }));
  }
}
