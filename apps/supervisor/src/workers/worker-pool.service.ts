import { Inject, Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { APP_CONFIG, REPO_ROOT, type AppConfig } from '@flexy/config';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { resolveDevices, type WorkerDevice } from './devices';
import { WorkerProcess } from './worker-process';

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** A worker that stayed up this long has its restart backoff reset. */
const HEALTHY_AFTER_MS = 60_000;

interface Slot {
  device: WorkerDevice;
  worker: WorkerProcess | null;
  restarts: number;
  backoffMs: number;
  startedAt: number;
  lastError: string | null;
  restartTimer: NodeJS.Timeout | null;
}

/**
 * Owns one Python worker per device of this host and hands idle ones to job handlers. A worker that
 * exits is restarted with exponential backoff; its job was already failed as retryable by WorkerProcess.
 */
@Injectable()
export class WorkerPool implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(WorkerPool.name);
  private readonly slots: Slot[] = [];
  private readonly idle: WorkerProcess[] = [];
  private readonly waiters: Array<(w: WorkerProcess) => void> = [];
  private stopping = false;
  readonly host = hostname();

  constructor(@Inject(APP_CONFIG) private readonly config: AppConfig) {}

  async onModuleInit(): Promise<void> {
    const devices = await resolveDevices(this.config.workerDevices);
    for (const device of devices) {
      this.slots.push({ device, worker: null, restarts: 0, backoffMs: BACKOFF_FIRST_MS, startedAt: 0, lastError: null, restartTimer: null });
    }
    // Jobs are only taken once a worker is ready, so the first start is awaited.
    await Promise.all(this.slots.map((slot) => this.launch(slot)));
  }

  get size(): number {
    return this.slots.length;
  }

  /** Waits for an idle, ready worker. */
  acquire(): Promise<WorkerProcess> {
    const worker = this.idle.shift();
    if (worker) return Promise.resolve(worker);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(worker: WorkerProcess): void {
    if (worker.state !== 'ready' || this.stopping) return;
    const waiter = this.waiters.shift();
    if (waiter) waiter(worker);
    else if (!this.idle.includes(worker)) this.idle.push(worker);
  }

  /** Forwards a cancel to the worker running `jobId`; false when no worker here holds it. */
  cancel(jobId: string): boolean {
    const worker = this.slots.map((s) => s.worker).find((w) => w?.busyJobId === jobId);
    worker?.cancel(jobId);
    return !!worker;
  }

  workers(): Array<{ id: string; device: WorkerDevice; state: string; pid?: number; restarts: number; lastError: string | null; busyJobId: string | null }> {
    return this.slots.map((s) => ({
      id: this.workerId(s.device),
      device: s.device,
      state: s.worker?.state ?? 'restarting',
      pid: s.worker?.pid,
      restarts: s.restarts,
      lastError: s.lastError,
      busyJobId: s.worker?.busyJobId ?? null,
    }));
  }

  workerId(device: WorkerDevice): string {
    return `${this.host}/${device.id}`;
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopping = true;
    for (const slot of this.slots) if (slot.restartTimer) clearTimeout(slot.restartTimer);
    await Promise.all(this.slots.map((s) => s.worker?.stop(10_000)));
  }

  private async launch(slot: Slot): Promise<void> {
    const c = this.config;
    const worker = new WorkerProcess({
      id: this.workerId(slot.device),
      python: c.workerPython,
      args: [
        '--models-dir', c.modelsDir,
        '--catalog', c.engineCatalogPath,
        '--device', slot.device.cudaVisibleDevices === undefined ? 'cpu' : 'cuda',
        ...(c.workerPreload.length ? ['--preload', c.workerPreload.join(',')] : []),
      ],
      cwd: join(REPO_ROOT, 'worker-python'),
      env: {
        ...process.env,
        HF_HUB_OFFLINE: '1',
        PYTHONUNBUFFERED: '1',
        CUDA_VISIBLE_DEVICES: slot.device.cudaVisibleDevices ?? '',
      },
      heartbeatIntervalMs: c.heartbeatIntervalMs,
      heartbeatTimeoutMs: c.heartbeatTimeoutMs,
      startTimeoutMs: 600_000,
    });
    slot.worker = worker;
    slot.startedAt = Date.now();
    worker.on('exit', (exit) => {
      this.forget(worker);
      slot.lastError = exit.reason;
      if (!this.stopping) this.scheduleRestart(slot);
    });
    try {
      const ready = await worker.start();
      this.logger.log(`${worker.id} ready on ${ready.device} (pid ${ready.pid}); engines: ${ready.engines.map((e) => `${e.engine}[${e.weights}]`).join(', ')}`);
      this.release(worker);
    } catch (err) {
      this.logger.error(`${worker.id} failed to start: ${(err as Error).message}`);
    }
  }

  private scheduleRestart(slot: Slot): void {
    if (Date.now() - slot.startedAt > HEALTHY_AFTER_MS) slot.backoffMs = BACKOFF_FIRST_MS;
    const delay = slot.backoffMs;
    slot.backoffMs = Math.min(slot.backoffMs * 2, BACKOFF_MAX_MS);
    slot.restarts += 1;
    this.logger.warn(`restarting ${this.workerId(slot.device)} in ${delay} ms (restart ${slot.restarts})`);
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      void this.launch(slot);
    }, delay);
  }

  private forget(worker: WorkerProcess): void {
    const i = this.idle.indexOf(worker);
    if (i >= 0) this.idle.splice(i, 1);
  }
}
