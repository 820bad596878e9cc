import type Redis from 'ioredis';
import type { EngineInfo, ResidencyReport } from './wire/protocol';

/**
 * What each supervisor publishes about each of its Python workers, every few seconds, to a Redis
 * key with a short TTL: the dashboard, /health/ready and /metrics read these, and a host that
 * vanishes disappears from the list by itself.
 */
export type WorkerLifecycleState = 'starting' | 'canary' | 'ready' | 'busy' | 'restarting' | 'unhealthy' | 'stopping';

export interface WorkerStatus {
  /** host/device, e.g. gpu-box-1/gpu0 */
  id: string;
  host: string;
  device: string;
  state: WorkerLifecycleState;
  pid: number | null;
  restarts: number;
  lastError: string | null;
  currentJob: { id: string; engine: string; step: number; totalSteps: number; startedAt: number } | null;
  residency: ResidencyReport | null;
  /** Each engine whose snapshot the worker found, with its health there. */
  engines: EngineInfo[];
  updatedAt: number;
}

export const WORKER_STATUS_PREFIX = 'flexy:worker:';
export const WORKER_STATUS_TTL_S = 15;
export const workerStatusKey = (id: string) => `${WORKER_STATUS_PREFIX}${id}`;

/**
 * Every published worker status, read with SCAN + MGET. A key that expired between the two, or a
 * malformed report, is skipped: one bad report must not hide the others.
 */
export async function readWorkerStatuses(redis: Redis): Promise<WorkerStatus[]> {
  const keys = new Set<string>();
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${WORKER_STATUS_PREFIX}*`, 'COUNT', 1000);
    batch.forEach((k) => keys.add(k));
    cursor = next;
  } while (cursor !== '0');
  if (keys.size === 0) return [];
  const statuses: WorkerStatus[] = [];
  for (const raw of await redis.mget(...keys)) {
    if (!raw) continue;
    try {
      statuses.push(JSON.parse(raw) as WorkerStatus);
    } catch {
      // skipped, see above
    }
  }
  return statuses;
}
