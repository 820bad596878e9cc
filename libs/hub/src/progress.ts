/**
 * Pull progress for people: redrawn bars (bytes, rate, ETA) on a terminal, plain lines otherwise
 * (logs, CI, `docker build` output), where cursor movement would only add noise.
 */
import { formatBytes, formatDuration, formatRate, shortRevision } from './format';
import type { FileOutcome, PlannedFile, PullReporter, RemotePlan } from './pull';

export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

interface EngineProgress {
  total: number;
  done: number;
  /** Bytes that came over the network in this run (excludes resumed and kept bytes), for the rate. */
  transferred: number;
  startedAt: number;
  active: Map<string, { size: number; done: number }>;
  lastPlainAt: number;
}

const BAR = 20;

function bar(fraction: number, width = BAR): string {
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return '#'.repeat(filled) + '-'.repeat(width - filled);
}

export class ProgressReporter implements PullReporter {
  private readonly engines = new Map<string, EngineProgress>();
  private drawnLines = 0;
  private lastDraw = 0;
  private readonly tty: boolean;

  constructor(
    private readonly out: ProgressStream,
    private readonly now: () => number = Date.now,
    /** Seconds between progress lines when not on a terminal. */
    private readonly plainEverySeconds = 10,
  ) {
    this.tty = !!out.isTTY;
  }

  plan(engine: string, plan: RemotePlan): void {
    this.engines.set(engine, {
      total: plan.totalBytes,
      done: 0,
      transferred: 0,
      startedAt: this.now(),
      active: new Map(),
      lastPlainAt: this.now(),
    });
    this.line(
      `${engine}: ${plan.repo}@${shortRevision(plan.revision)}${plan.requested !== plan.revision ? ` (${plan.requested})` : ''}: ` +
        `${plan.files.length} files, ${formatBytes(plan.totalBytes)}`,
    );
  }

  fileStart(engine: string, file: PlannedFile, offset: number): void {
    const e = this.engines.get(engine);
    if (e) {
      // Bytes saved by an earlier run count as done, not as transferred.
      e.active.set(file.path, { size: file.size, done: offset });
      e.done += offset;
    }
    if (!this.tty) {
      this.line(offset > 0 ? `${engine}: resume ${file.path} at ${formatBytes(offset)} of ${formatBytes(file.size)}` : `${engine}: get ${file.path} (${formatBytes(file.size)})`);
    }
  }

  bytes(engine: string, file: PlannedFile, n: number): void {
    const e = this.engines.get(engine);
    if (!e) return;
    e.done += n;
    const active = e.active.get(file.path);
    if (active) {
      active.done += n;
      e.transferred += n;
    }
    if (this.tty) {
      if (this.now() - this.lastDraw >= 100) this.draw();
    } else if (this.now() - e.lastPlainAt >= this.plainEverySeconds * 1000) {
      e.lastPlainAt = this.now();
      this.line(`${engine}: ${this.summary(e)}`);
    }
  }

  fileDone(engine: string, file: PlannedFile, outcome: FileOutcome): void {
    const e = this.engines.get(engine);
    e?.active.delete(file.path);
    const how = outcome === 'kept' ? 'kept (already on disk and matching)' : outcome === 'resumed' ? 'resumed and verified' : 'verified';
    this.line(`${engine}: ${outcome === 'kept' ? 'kept' : 'done'} ${file.path} (${formatBytes(file.size)}) ${how}`);
  }

  retry(engine: string, file: PlannedFile, attempt: number, reason: string): void {
    const e = this.engines.get(engine);
    const active = e?.active.get(file.path);
    if (e && active) {
      e.done -= active.done;
      e.active.delete(file.path);
    }
    this.line(`${engine}: retry ${attempt} for ${file.path}: ${reason}`);
  }

  finish(engine: string): void {
    const e = this.engines.get(engine);
    if (!e) return;
    const seconds = (this.now() - e.startedAt) / 1000;
    this.line(`${engine}: complete, ${formatBytes(e.total)} in ${formatDuration(seconds)} (${formatBytes(e.transferred)} transferred)`);
    this.engines.delete(engine);
    if (this.tty) this.draw();
  }

  /** A line that stays, printed above the bars. */
  line(text: string): void {
    if (this.tty) {
      this.clear();
      this.out.write(text + '\n');
      this.draw();
    } else {
      this.out.write(text + '\n');
    }
  }

  summary(e: EngineProgress): string {
    const elapsed = Math.max(0.001, (this.now() - e.startedAt) / 1000);
    const rate = e.transferred / elapsed;
    const eta = rate > 0 ? (e.total - e.done) / rate : Number.NaN;
    const pct = e.total > 0 ? Math.floor((e.done / e.total) * 100) : 100;
    return `${String(pct).padStart(3)}% ${formatBytes(e.done)}/${formatBytes(e.total)} ${formatRate(rate)} ETA ${formatDuration(eta)}`;
  }

  private clear(): void {
    if (this.drawnLines > 0) this.out.write(`\x1b[${this.drawnLines}A\x1b[0J`);
    this.drawnLines = 0;
  }

  private draw(): void {
    this.clear();
    const width = this.out.columns || 100;
    const lines: string[] = [];
    for (const [engine, e] of this.engines) {
      lines.push(`${engine} [${bar(e.total ? e.done / e.total : 1)}] ${this.summary(e)}`);
      for (const [path, f] of e.active) {
        const tail = ` [${bar(f.size ? f.done / f.size : 1, 10)}] ${formatBytes(f.done)}/${formatBytes(f.size)}`;
        const room = Math.max(12, width - 3 - tail.length);
        const name = path.length > room ? '…' + path.slice(-(room - 1)) : path;
        lines.push(`  ${name}${tail}`);
      }
    }
    for (const l of lines) this.out.write(l.slice(0, width - 1) + '\n');
    this.drawnLines = lines.length;
    this.lastDraw = this.now();
  }
}
