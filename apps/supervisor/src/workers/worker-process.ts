import { Logger } from '@nestjs/common';
import {
  encodeFrame,
  FrameDecoder,
  type EngineInfo,
  type Frame,
  type GenerateMessage,
  type ImageMessage,
  type ProgressMessage,
  type PongMessage,
  type RawImageRef,
  type ReadyMessage,
  type ResidencyReport,
  type ResultMessage,
  type SupervisorMessage,
  type WorkerMessage,
} from '@flexy/contracts';
import { EventEmitter } from 'node:events';
import type { ResultPromise } from 'execa';

export type WorkerState = 'starting' | 'ready' | 'busy' | 'stopping' | 'exited';

type Execa = (typeof import('execa'))['execa'];
let loadedExeca: Execa | null = null;

/** execa is an ES module: imported once, so that spawning a spare later is synchronous. */
export async function loadExeca(): Promise<void> {
  loadedExeca ??= (await import('execa')).execa;
}

export interface WorkerProcessOptions {
  id: string;
  python: string;
  cwd: string;
  /** The worker's whole environment: its one channel of settings (flexy_worker/settings.py). */
  env: Record<string, string | undefined>;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  /**
   * A job that reported a step and then none for this long is hung inside a step (a CUDA kernel that
   * never returns): pongs keep coming from the worker's reader thread, so heartbeats cannot see it.
   */
  stallTimeoutMs: number;
  /** Between SIGTERM and SIGKILL when the worker is stopped for a hang or a missed deadline. */
  killGraceMs: number;
  /** How long `start` waits for `ready` (the preload set can be large). */
  startTimeoutMs: number;
}

export interface WorkerExit {
  code: number | null;
  signal: string | null;
  reason: string;
}

export interface RawImage {
  index: number;
  ref: RawImageRef;
  pixels: Buffer;
}

export interface RunOutcome {
  result: ResultMessage;
  images: RawImage[];
}

/**
 * The engine a job just ran on is on the device now. The worker's own report of it comes with its next
 * pong, up to a heartbeat later, and the next job may be routed before that: without this, a job for
 * the same engine could go to another idle worker and load it there again.
 */
export function withEngineOnDevice(report: ResidencyReport | null, engine: string): ResidencyReport {
  const base = report ?? { engines: [], device_bytes_used: 0, device_budget_bytes: 0, last_load_ms: null, last_swap_ms: null };
  const held = base.engines.find((e) => e.engine === engine);
  if (held?.location === 'device') return base;
  const others = base.engines.filter((e) => e.engine !== engine);
  return { ...base, engines: [...others, { engine, location: 'device', bytes: held?.bytes ?? 0 }] };
}

/** The worker process ended (or was killed) while it held a job: the job is retryable elsewhere. */
export class WorkerLostError extends Error {
  constructor(readonly workerId: string, readonly exit: WorkerExit) {
    super(`worker ${workerId} ${exit.reason}`);
    this.name = 'WorkerLostError';
  }
}

/**
 * The worker stopped the job without anyone asking for a cancel (it got SIGTERM, was shut down, or
 * lost its supervisor) and answered `interrupted`: the job was not finished and must go back to the
 * queue, never be recorded as cancelled.
 */
export class WorkerInterruptedError extends WorkerLostError {
  constructor(workerId: string, message: string) {
    super(workerId, { code: null, signal: null, reason: message });
    this.name = 'WorkerInterruptedError';
  }
}

interface PendingRun {
  jobId: string;
  images: RawImage[];
  onProgress: (p: ProgressMessage, preview: Buffer | null) => void;
  resolve: (outcome: RunOutcome) => void;
  reject: (err: Error) => void;
}

/**
 * One Python worker process: spawns it, speaks the framed protocol over its stdio, keeps a heartbeat,
 * and turns its death into a `WorkerLostError` for the job it held. Restarting is the pool's business.
 */
export class WorkerProcess extends EventEmitter {
  state: WorkerState = 'starting';
  ready: ReadyMessage | null = null;
  residency: ResidencyReport | null = null;
  /** Each engine's health as the worker last reported it (ready, then every pong). */
  engines: EngineInfo[] = [];
  lastSeenAt = Date.now();
  readonly stderrTail: string[] = [];
  private child: ResultPromise | null = null;
  private readonly decoder = new FrameDecoder();
  private pending: PendingRun | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private pingSeq = 0;
  private exitInfo: WorkerExit | null = null;
  private killReason: string | null = null;
  private killTimer: NodeJS.Timeout | null = null;
  private readonly logger: Logger;
  readonly exited: Promise<WorkerExit>;
  private markExited!: (exit: WorkerExit) => void;

  constructor(readonly options: WorkerProcessOptions) {
    super();
    this.logger = new Logger(`worker ${options.id}`);
    this.exited = new Promise((resolve) => (this.markExited = resolve));
  }

  get id(): string {
    return this.options.id;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get busyJobId(): string | null {
    return this.pending?.jobId ?? null;
  }

  /** The job on this worker with its latest step, for status reports. */
  currentJob: { id: string; engine: string; step: number; totalSteps: number; startedAt: number } | null = null;

  /** Spawns the worker and waits for its `ready`. */
  async start(): Promise<ReadyMessage> {
    await loadExeca();
    this.spawn();
    return this.untilReady();
  }

  /** A spare (spawned with FLEXY_WORKER_STANDBY): tells it to start, and waits for its `ready`. */
  activate(): Promise<ReadyMessage> {
    this.send({ type: 'start' });
    return this.untilReady();
  }

  /** Spawns the process; `ready` comes later (`start`), or after `activate` for a spare. */
  spawn(): void {
    // execa is an ES module: loaded once, before the first spawn (see loadExeca).
    const execa = loadedExeca;
    if (!execa) throw new Error('execa is not loaded yet: await loadExeca() first');
    const o = this.options;
    const child = execa(o.python, ['-m', 'flexy_worker'], {
      cwd: o.cwd,
      env: o.env,
      extendEnv: false,
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'pipe',
      buffer: false,
      encoding: 'buffer',
      reject: false,
      cleanup: true,
      forceKillAfterDelay: 5000,
      // Its own process group: a terminal's Ctrl-C or `kill -- -PGID` aimed at the service reaches this
      // supervisor, which stops the worker in order; it never interrupts the job behind its back.
      // (A worker whose supervisor dies sees its stdin close and exits by itself.)
      detached: true,
    });
    this.child = child;
    child.stdout!.on('data', (chunk: Buffer) => this.onStdout(chunk));
    child.stderr!.on('data', (chunk: Buffer) => this.onStderr(chunk));
    child.stdin!.on('error', () => undefined); // EPIPE after death is reported through the exit path
    void child.then((r) => {
      const signal = r.signal ?? null;
      const code = r.exitCode ?? null;
      const during = this.pending ? ` while running ${this.pending.jobId}` : '';
      const reason = this.killReason ?? (signal ? `was killed by ${signal}${during}` : `exited with code ${code}${during}`);
      this.onExit({ code, signal, reason });
    });
  }

  private async untilReady(): Promise<ReadyMessage> {
    const o = this.options;
    const ready = await new Promise<ReadyMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.kill(`did not become ready within ${o.startTimeoutMs} ms`);
      }, o.startTimeoutMs);
      this.once('ready', (msg: ReadyMessage) => {
        clearTimeout(timer);
        resolve(msg);
      });
      void this.exited.then((exit) => {
        clearTimeout(timer);
        reject(new WorkerLostError(this.id, exit));
      });
    });
    this.heartbeat = setInterval(() => this.checkHeartbeat(), o.heartbeatIntervalMs);
    this.heartbeat.unref();
    return ready;
  }

  /** Runs one generation; rejects with WorkerLostError if the process dies or hangs meanwhile. */
  run(
    message: GenerateMessage,
    referencePixels: Buffer,
    onProgress: PendingRun['onProgress'],
  ): Promise<RunOutcome> {
    if (this.state !== 'ready') return Promise.reject(new Error(`worker ${this.id} is ${this.state}, not ready`));
    this.state = 'busy';
    this.currentJob = { id: message.job_id, engine: message.engine, step: 0, totalSteps: message.steps, startedAt: Date.now() };
    return new Promise<RunOutcome>((resolve, reject) => {
      this.pending = { jobId: message.job_id, images: [], onProgress, resolve, reject };
      this.send(message, referencePixels);
    });
  }

  /** A user's cancel: the worker answers `cancelled`. */
  cancel(jobId: string): void {
    if (this.pending?.jobId === jobId) this.send({ type: 'cancel', job_id: jobId });
  }

  /** The supervisor takes the job back (shutdown, lost lock): the worker answers `interrupted`. */
  interrupt(jobId: string): void {
    if (this.pending?.jobId === jobId) this.send({ type: 'interrupt', job_id: jobId });
  }

  /** Ends a spare that was never started: it holds no job and no device, so SIGKILL costs nothing. */
  discard(): void {
    if (this.state === 'starting' && this.child) {
      this.killReason = 'discarded (a spare never started)';
      this.child.kill('SIGKILL');
    }
  }

  /** Asks for a clean exit; kills after `graceMs`. */
  async stop(graceMs: number): Promise<WorkerExit> {
    if (this.state === 'exited') return this.exitInfo!;
    this.state = 'stopping';
    this.send({ type: 'shutdown' });
    const timer = setTimeout(() => this.kill(`did not stop within ${graceMs} ms`), graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  /**
   * Stops a worker that can no longer be trusted (silent, past a deadline, failed to start): SIGTERM,
   * then SIGKILL after the kill grace, since a step stuck in a kernel never reaches the SIGTERM check.
   * Its job fails as retryable now, not at exit: a worker that obeys SIGTERM would answer the job
   * `cancelled`, and that answer must not count.
   */
  kill(reason: string): void {
    if (this.state === 'exited' || !this.child || this.killReason !== null) return;
    this.killReason = reason;
    this.state = 'stopping';
    this.logger.warn(`stopping: ${reason}`);
    this.failPending({ code: null, signal: null, reason });
    this.child.kill('SIGTERM');
    this.killTimer = setTimeout(() => this.child?.kill('SIGKILL'), this.options.killGraceMs);
    this.killTimer.unref();
  }

  private send(message: SupervisorMessage, payload?: Buffer): void {
    const stdin = this.child?.stdin;
    if (!stdin || stdin.destroyed) return;
    stdin.write(encodeFrame(message, payload));
  }

  private checkHeartbeat(): void {
    if (this.state === 'exited' || this.state === 'starting') return;
    const silentFor = Date.now() - this.lastSeenAt;
    if (silentFor > this.options.heartbeatTimeoutMs) {
      this.kill(`missed heartbeats for ${silentFor} ms`);
      return;
    }
    this.send({ type: 'ping', seq: ++this.pingSeq });
  }

  /** Judged from the worker's own clock of its last step, once the job has shown at least one. */
  private checkStall(pong: PongMessage): void {
    const job = this.currentJob;
    if (!job || job.step === 0 || pong.busy_job_id !== job.id || pong.last_progress_at === null) return;
    const quietFor = Date.now() - pong.last_progress_at;
    if (quietFor > this.options.stallTimeoutMs) this.kill(`no step of job ${job.id} for ${quietFor} ms (hung inside step ${job.step + 1})`);
  }

  private onStdout(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.kill(`sent an invalid frame: ${(err as Error).message}`);
      return;
    }
    this.lastSeenAt = Date.now();
    for (const frame of frames) this.onMessage(frame.header as unknown as WorkerMessage, frame.payload);
  }

  private onMessage(msg: WorkerMessage, payload: Buffer): void {
    switch (msg.type) {
      case 'ready':
        this.ready = msg;
        this.residency = msg.residency;
        this.engines = msg.engines;
        this.state = 'ready';
        this.emit('ready', msg);
        return;
      case 'pong':
        this.residency = (msg as PongMessage).residency;
        this.engines = (msg as PongMessage).engines;
        this.checkStall(msg as PongMessage);
        return;
      case 'progress':
        if (this.pending?.jobId !== msg.job_id) return;
        if (this.currentJob) Object.assign(this.currentJob, { step: msg.step, totalSteps: msg.total_steps });
        this.pending.onProgress(msg, msg.preview ? payload : null);
        return;
      case 'image':
        if (this.pending?.jobId === msg.job_id) {
          const image = msg as ImageMessage;
          this.pending.images.push({ index: image.index, ref: image.image, pixels: payload });
        }
        return;
      case 'result': {
        const run = this.pending;
        if (!run || run.jobId !== msg.job_id) return;
        if (msg.status === 'succeeded' && this.currentJob) this.residency = withEngineOnDevice(this.residency, this.currentJob.engine);
        this.pending = null;
        this.currentJob = null;
        if (this.state === 'busy') this.state = 'ready';
        if (msg.status === 'interrupted') run.reject(new WorkerInterruptedError(this.id, `interrupted ${msg.job_id}: ${msg.error?.message ?? 'no detail'}`));
        else run.resolve({ result: msg, images: run.images.sort((a, b) => a.index - b.index) });
        this.emit('idle');
        return;
      }
    }
  }

  private onStderr(chunk: Buffer): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line.trim()) continue;
      this.stderrTail.push(line);
      if (this.stderrTail.length > 50) this.stderrTail.shift();
      this.logger.log(line);
    }
  }

  private failPending(exit: WorkerExit): void {
    if (!this.pending) return;
    this.pending.reject(new WorkerLostError(this.id, exit));
    this.pending = null;
    this.currentJob = null;
  }

  private onExit(exit: WorkerExit): void {
    this.state = 'exited';
    this.exitInfo = exit;
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.killTimer) clearTimeout(this.killTimer);
    this.failPending(exit);
    this.logger.warn(exit.reason);
    this.markExited(exit);
    this.emit('exit', exit);
  }
}
