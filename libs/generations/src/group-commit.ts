/**
 * Group commit: callers submit units of work one at a time; while one write is in flight, the units
 * that arrive meanwhile wait and then go out together in the next write. An idle gateway writes at
 * once (no timer, no added latency); a busy one pays the per-write costs (statement preparation,
 * round trips) once for many requests instead of once each.
 *
 * `write` gets the units of one round and answers one outcome per unit, in order, so a unit that
 * fails (its own bad row) fails alone: one caller's error never becomes another caller's.
 */
export type UnitOutcome<R> = { ok: true; value: R } | { ok: false; error: unknown };

interface Pending<U, R> {
  unit: U;
  resolve: (value: R) => void;
  reject: (error: unknown) => void;
}

export class GroupCommit<U, R> {
  private queue: Pending<U, R>[] = [];
  private writing = false;

  /**
   * @param write writes the units of one round; one outcome per unit, in order.
   * @param sizeOf the rows a unit adds to a round; a round stops taking units past `maxRows` (it
   *   always takes at least one, however large).
   */
  constructor(
    private readonly write: (units: U[]) => Promise<UnitOutcome<R>[]>,
    private readonly sizeOf: (unit: U) => number = () => 1,
    private readonly maxRows = 256,
  ) {}

  submit(unit: U): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ unit, resolve, reject });
      if (!this.writing) this.startRound();
    });
  }

  /** Units waiting for the next round (for metrics and tests). */
  get waiting(): number {
    return this.queue.length;
  }

  private startRound(): void {
    this.writing = true;
    // One macrotask later, so the requests already parsed in this turn of the event loop join in.
    setImmediate(() => void this.round());
  }

  private async round(): Promise<void> {
    const batch = this.take();
    try {
      const outcomes = await this.write(batch.map((p) => p.unit)).catch((error: unknown) => batch.map(() => ({ ok: false as const, error })));
      batch.forEach((p, i) => {
        const outcome = outcomes[i] ?? { ok: false as const, error: new Error('group commit: no outcome for a unit') };
        if (outcome.ok) p.resolve(outcome.value);
        else p.reject(outcome.error);
      });
    } finally {
      if (this.queue.length > 0) this.startRound();
      else this.writing = false;
    }
  }

  private take(): Pending<U, R>[] {
    let rows = 0;
    let n = 0;
    while (n < this.queue.length && (n === 0 || rows + this.sizeOf(this.queue[n].unit) <= this.maxRows)) {
      rows += this.sizeOf(this.queue[n].unit);
      n++;
    }
    return this.queue.splice(0, n);
  }
}
