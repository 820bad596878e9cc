import { Inject, Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { WORKER_STATUS_TTL_S, WorkerExitCode, workerStatusKey, type WorkerLifecycleState, type WorkerStatus } from '@flexy/contracts';
import { APP_CONFIG, REDIS, REPO_ROOT, SETTING_NAMES, type AppConfig } from '@flexy/config';
import type Redis from 'ioredis';
import { join } from 'node:path';
import { resolveDevices, type WorkerDevice } from './devices';
import { WorkerProcess, type WorkerExit } from './worker-process';

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** This many restarts without a healthy period marks the device unhealthy (it keeps retrying). */
const CRASH_LOOP_RESTARTS = 5;
const STATUS_EVERY_MS = 2000;

interface Slot {
  device: WorkerDevice;
  worker: WorkerProcess | null;
  state: WorkerLifecycleState;
  restarts: number;
  /** Restarts since a worker last served for the healthy period (config.workerHealthyAfterMs). */
  recentRestarts: number;
  backoffMs: number;
  /** When the current worker passed its canary; 0 while it has not. */
  readyAt: number;
  lastError: string | null;
  preload: string[];
  restartTimer: NodeJS.Timeout | null;
  /** A standby process (imports done, device untouched) that replaces the worker when it dies. */
  spare: { worker: WorkerProcess; preload: string } | null;
}

interface Waiter {
  engine: string;
  resolve: (w: WorkerProcess) => void;
}

/**
 * A worker's environment, its one channel of settings: the host's own variables (PATH, CUDA's and
 * the proxies') without any of the service's settings, then the worker's settings as validated by
 * the configuration, then this worker's device and preload set. So the worker never sees a raw
 * value the schema did not pass, nor settings it has no use for (database, passwords).
 */
export function workerEnvironment(config: AppConfig, device: WorkerDevice, preload: readonly string[], standby = false): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !(SETTING_NAMES as readonly string[]).includes(name)) env[name] = value;
  }
  return {
    ...env,
    ...config.workerEnv,
    FLEXY_WORKER_DEVICE: device.cudaVisibleDevices === undefined ? 'cpu' : 'cuda',
    // A device group: this process is rank 0 and starts the other ranks itself (flexy_worker/group.py).
    FLEXY_WORKER_WORLD_SIZE: String(device.ranks ?? 1),
    FLEXY_WORKER_RANK: '0',
    WORKER_PRELOAD: preload.join(','),
    FLEXY_WORKER_STANDBY: standby ? '1' : '0',
    CUDA_VISIBLE_DEVICES: device.cudaVisibleDevices ?? '',
    HF_HUB_OFFLINE: '1',
    PYTHONUNBUFFERED: '1',
  };
}

/**
 * How well a worker suits an engine: on the device beats parked in host memory beats nothing, and a
 * worker that reports the engine unavailable comes last.
 */
export function residencyScore(worker: WorkerProcess, engine: string): number {
  if (worker.engines?.some((e) => e.engine === engine && e.state === 'unavailable')) return -1;
  const held = worker.residency?.engines.find((e) => e.engine === engine);
  return held ? (held.location === 'device' ? 2 : 1) : 0;
}

/**
 * Owns one Python worker per device of this host and hands idle ones to job handlers, preferring
 * the worker that already holds the job's engine so a swap is paid only when no such worker is
 * idle. A worker is ready once its preload set is loaded; each engine passes a one-step canary in the
 * worker when it is first loaded there (health is per engine: one engine's bad files make that engine
 * unavailable, not the worker). One that exits is restarted: at once after a poisoned CUDA context,
 * with a smaller preload set after an out-of-memory while loading, otherwise with exponential
 * backoff; its job was already failed as retryable by WorkerProcess. A restart takes over the slot's
 * spare (WORKER_SPARE), a process that has already paid for importing torch and diffusers, so it is
 * ready in a second or two; a new spare is started once the worker serves.
 */
@Injectable()
export class WorkerPool implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(WorkerPool.name);
  private readonly slots: Slot[] = [];
  private readonly idle: WorkerProcess[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly capacityListeners: Array<(serving: number) => void> = [];
  private statusTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  readonly host: string;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(REDIS) private readonly redis: Redis,
  ) {
    this.host = config.supervisorHostId;
  }

  async onModuleInit(): Promise<void> {
    const devices = await resolveDevices(this.config.workerDevices, this.config.cudaVisibleDevices);
    for (const device of devices) {
      this.slots.push({
        device,
        worker: null,
        state: 'starting',
        restarts: 0,
        recentRestarts: 0,
        backoffMs: BACKOFF_FIRST_MS,
        readyAt: 0,
        lastError: null,
        preload: [...this.config.workerPreload],
        restartTimer: null,
        spare: null,
      });
    }
    this.statusTimer = setInterval(() => void this.publishStatus(), STATUS_EVERY_MS);
    this.statusTimer.unref();
    // Jobs are only taken once a worker is ready, so the first start is awaited.
    await Promise.all(this.slots.map((slot) => this.launch(slot)));
  }

  get size(): number {
    return this.slots.length;
  }

  /** Workers that are ready and not restarting (busy ones included). */
  servingCount(): number {
    return this.slots.filter((s) => s.state === 'ready').length;
  }

  /** Called with the serving count whenever a worker becomes ready or stops serving. */
  onCapacityChange(listener: (serving: number) => void): void {
    this.capacityListeners.push(listener);
  }

  /**
   * Waits for an idle, ready worker, preferring one that already holds `engine`. Rejects with the
   * signal's reason if `signal` aborts first.
   */
  acquire(engine: string, signal?: AbortSignal): Promise<WorkerProcess> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.idle.length) {
      let best = 0;
      for (let i = 1; i < this.idle.length; i++) {
        if (residencyScore(this.idle[i], engine) > residencyScore(this.idle[best], engine)) best = i;
      }
      return Promise.resolve(this.idle.splice(best, 1)[0]);
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        engine,
        resolve: (w) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(w);
        },
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(worker: WorkerProcess): void {
    if (worker.state !== 'ready' || this.stopping) return;
    if (this.waiters.length) {
      // The longest waiter, unless a later one wants an engine this worker already holds.
      let best = 0;
      for (let i = 1; i < this.waiters.length; i++) {
        if (residencyScore(worker, this.waiters[i].engine) > residencyScore(worker, this.waiters[best].engine)) best = i;
      }
      this.waiters.splice(best, 1)[0].resolve(worker);
    } else if (!this.idle.includes(worker)) this.idle.push(worker);
  }

  /** Forwards a cancel to the worker running `jobId`; false when no worker here holds it. */
  cancel(jobId: string): boolean {
    const worker = this.slots.map((s) => s.worker).find((w) => w?.busyJobId === jobId);
    worker?.cancel(jobId);
    return !!worker;
  }

  /**
   * Takes a job back from the worker running it (a shutdown, a lost lock): the worker stops between
   * steps and answers `interrupted`, never `cancelled`. False when no worker here holds it.
   */
  interrupt(jobId?: string): boolean {
    const workers = this.slots.map((s) => s.worker).filter((w) => w?.busyJobId && (jobId === undefined || w.busyJobId === jobId));
    for (const worker of workers) worker!.interrupt(worker!.busyJobId!);
    return workers.length > 0;
  }

  /**
   * The supervisor is stopping: from now on no worker is restarted (a worker lost during the drain
   * is not replaced by one that would only be stopped again) and none is handed out.
   */
  beginShutdown(): void {
    if (this.stopping) return;
    this.stopping = true;
    for (const slot of this.slots) {
      if (slot.restartTimer) clearTimeout(slot.restartTimer);
      slot.restartTimer = null;
      slot.spare?.worker.discard(); // nothing will need it
    }
  }

  /** Stops every worker that holds a job (they did not obey a cancel in time). */
  killBusy(reason: string): void {
    for (const slot of this.slots) if (slot.worker?.busyJobId) slot.worker.kill(reason);
  }

  statuses(): WorkerStatus[] {
    return this.slots.map((slot) => {
      const w = slot.worker;
      let state: WorkerLifecycleState = slot.state;
      if (state === 'ready' && w?.state === 'busy') state = 'busy';
      if (slot.recentRestarts >= CRASH_LOOP_RESTARTS && state !== 'ready' && state !== 'busy') state = 'unhealthy';
      return {
        id: this.workerId(slot.device),
        host: this.host,
        device: slot.device.id,
        state,
        pid: w?.pid ?? null,
        restarts: slot.restarts,
        lastError: slot.lastError,
        currentJob: w?.currentJob ? { ...w.currentJob } : null,
        residency: w?.residency ?? null,
        engines: w?.engines ?? [],
        updatedAt: Date.now(),
      };
    });
  }

  workerId(device: WorkerDevice): string {
    return `${this.host}/${device.id}`;
  }

  async onApplicationShutdown(): Promise<void> {
    this.beginShutdown();
    if (this.statusTimer) clearInterval(this.statusTimer);
    for (const slot of this.slots) slot.state = 'stopping';
    for (const slot of this.slots) slot.spare?.worker.discard();
    await Promise.all(this.slots.flatMap((s) => [s.worker?.stop(10_000), s.spare?.worker.exited]));
    // Redis may be away while stopping: the keys expire by themselves, so the last word is not waited for.
    await Promise.race([this.publishStatus(), new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
  }

  private async publishStatus(): Promise<void> {
    const multi = this.redis.multi();
    for (const status of this.statuses()) multi.set(workerStatusKey(status.id), JSON.stringify(status), 'EX', WORKER_STATUS_TTL_S);
    await multi.exec().catch(() => undefined); // Redis down: the keys expire and readers see the worker as gone
  }

  private newWorker(slot: Slot, standby: boolean): WorkerProcess {
    const c = this.config;
    return new WorkerProcess({
      id: this.workerId(slot.device),
      python: c.workerPython,
      cwd: join(REPO_ROOT, 'worker-python'),
      env: workerEnvironment(c, slot.device, slot.preload, standby),
      heartbeatIntervalMs: c.heartbeatIntervalMs,
      heartbeatTimeoutMs: c.heartbeatTimeoutMs,
      stallTimeoutMs: c.workerStallTimeoutMs,
      killGraceMs: c.workerKillGraceMs,
      startTimeoutMs: 600_000,
    });
  }

  /** The slot's spare if it is still waiting and was started for the current preload set, else null. */
  private takeSpare(slot: Slot): WorkerProcess | null {
    const spare = slot.spare;
    slot.spare = null;
    if (!spare) return null;
    if (spare.worker.state === 'starting' && spare.preload === slot.preload.join(',')) return spare.worker;
    spare.worker.discard(); // outdated (a smaller preload set since)
    return null;
  }

  /** Starts a spare for the slot unless it has one (it imports, then waits for `start`). */
  private ensureSpare(slot: Slot): void {
    // Not for a device group: its ranks are separate processes started by rank 0 (no standby for them).
    if (!this.config.workerSpare || slot.spare || this.stopping || (slot.device.ranks ?? 1) > 1) return;
    const spare = this.newWorker(slot, true);
    slot.spare = { worker: spare, preload: slot.preload.join(',') };
    spare.on('exit', (exit: WorkerExit) => {
      if (slot.spare?.worker !== spare) return; // taken over (its exit is the worker's) or replaced
      slot.spare = null;
      if (!this.stopping) this.logger.warn(`spare worker of ${spare.id} ${exit.reason}; a new one starts once the worker serves again`);
    });
    spare.spawn();
  }

  private async launch(slot: Slot): Promise<void> {
    const spare = this.takeSpare(slot);
    const worker = spare ?? this.newWorker(slot, false);
    slot.worker = worker;
    slot.state = 'starting';
    slot.readyAt = 0;
    worker.on('exit', (exit: WorkerExit) => {
      this.forget(worker);
      slot.lastError = exit.reason;
      if (this.stopping) return;
      const wasServing = slot.state === 'ready';
      slot.state = 'restarting';
      if (wasServing) this.capacityChanged();
      this.scheduleRestart(slot, exit);
    });
    try {
      const ready = spare ? await worker.activate() : await worker.start();
      if (worker.state !== 'ready' || this.stopping) return; // died or stopped meanwhile
      slot.state = 'ready';
      slot.readyAt = Date.now();
      const engines = ready.engines.map((e) => `${e.engine}[${e.weights}${e.state === 'available' ? '' : `, unavailable: ${e.reason}`}]`);
      this.logger.log(`${worker.id} ready on ${ready.device} (pid ${ready.pid}${spare ? ', from the spare' : ''}); engines: ${engines.join(', ')}`);
      void this.publishStatus();
      this.release(worker);
      this.capacityChanged();
      this.ensureSpare(slot);
    } catch (err) {
      this.logger.error(`${worker.id} failed to start: ${(err as Error).message}`);
      worker.kill(`failed to start: ${(err as Error).message}`);
    }
  }

  private scheduleRestart(slot: Slot, exit: WorkerExit): void {
    if (slot.readyAt && Date.now() - slot.readyAt > this.config.workerHealthyAfterMs) {
      slot.backoffMs = BACKOFF_FIRST_MS;
      slot.recentRestarts = 0;
    }
    let delay = slot.backoffMs;
    if (exit.code === WorkerExitCode.CudaPoisoned) {
      delay = 0; // the process is gone with its context; a fresh one is healthy
    } else {
      slot.backoffMs = Math.min(slot.backoffMs * 2, BACKOFF_MAX_MS);
    }
    if (exit.code === WorkerExitCode.PreloadOom && slot.preload.length) {
      const dropped = slot.preload.pop();
      this.logger.warn(`${this.workerId(slot.device)} ran out of memory while loading; preloading without ${dropped}`);
    }
    slot.restarts += 1;
    slot.recentRestarts += 1;
    this.logger.warn(`restarting ${this.workerId(slot.device)} in ${delay} ms (restart ${slot.restarts})`);
    void this.publishStatus();
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      void this.launch(slot);
    }, delay);
  }

  private capacityChanged(): void {
    const serving = this.servingCount();
    for (const listener of this.capacityListeners) listener(serving);
  }

  private forget(worker: WorkerProcess): void {
    const i = this.idle.indexOf(worker);
    if (i >= 0) this.idle.splice(i, 1);
  }
}
