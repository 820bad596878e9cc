import type { ResidencyReport } from './wire/protocol';

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
  engines: Array<{ engine: string; weights: string; revision: string }>;
  updatedAt: number;
}

export const WORKER_STATUS_PREFIX = 'flexy:worker:';
export const WORKER_STATUS_TTL_S = 15;
export const workerStatusKey = (id: string) => `${WORKER_STATUS_PREFIX}${id}`;
