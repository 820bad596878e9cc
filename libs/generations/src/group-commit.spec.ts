import { GroupCommit, type UnitOutcome } from './group-commit';

/** A writer that records each round and lets the test decide when a round finishes. */
function recordingWriter<U>(outcome: (unit: U) => UnitOutcome<string> = (u) => ({ ok: true, value: `done ${String(u)}` })) {
  const rounds: U[][] = [];
  const finishers: Array<() => void> = [];
  const write = (units: U[]) =>
    new Promise<UnitOutcome<string>[]>((resolve) => {
      rounds.push(units);
      finishers.push(() => resolve(units.map(outcome)));
    });
  return { rounds, write, finishNext: () => finishers.shift()!() };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('GroupCommit', () => {
  it('writes the units submitted in one turn together, and those that arrive during a write in the next round', async () => {
    const writer = recordingWriter<number>();
    const commit = new GroupCommit<number, string>(writer.write);
    const first = [1, 2, 3].map((n) => commit.submit(n));
    await tick();
    expect(writer.rounds).toEqual([[1, 2, 3]]);

    // Arrivals while the first write is in flight wait for it, then go out as one round.
    const second = [4, 5].map((n) => commit.submit(n));
    await tick();
    expect(writer.rounds).toHaveLength(1);
    expect(commit.waiting).toBe(2);
    writer.finishNext();
    await expect(Promise.all(first)).resolves.toEqual(['done 1', 'done 2', 'done 3']);
    await tick();
    expect(writer.rounds).toEqual([[1, 2, 3], [4, 5]]);
    writer.finishNext();
    await expect(Promise.all(second)).resolves.toEqual(['done 4', 'done 5']);

    // Idle again: the next unit is written at once, alone.
    const third = commit.submit(6);
    await tick();
    expect(writer.rounds[2]).toEqual([6]);
    writer.finishNext();
    await expect(third).resolves.toBe('done 6');
  });

  it("fails only the unit whose outcome is an error; the others in its round succeed", async () => {
    const writer = recordingWriter<string>((u) => (u === 'bad' ? { ok: false, error: new Error('bad row') } : { ok: true, value: u }));
    const commit = new GroupCommit<string, string>(writer.write);
    const results = ['a', 'bad', 'c'].map((u) => commit.submit(u).then((v) => `ok ${v}`, (e: Error) => `error ${e.message}`));
    await tick();
    writer.finishNext();
    await expect(Promise.all(results)).resolves.toEqual(['ok a', 'error bad row', 'ok c']);
  });

  it('rejects every unit of a round whose write throws, and keeps serving later rounds', async () => {
    let calls = 0;
    const commit = new GroupCommit<number, number>(async (units) => {
      if (++calls === 1) throw new Error('database gone');
      return units.map((u) => ({ ok: true as const, value: u * 10 }));
    });
    const failed = [1, 2].map((n) => commit.submit(n).catch((e: Error) => e.message));
    await expect(Promise.all(failed)).resolves.toEqual(['database gone', 'database gone']);
    await expect(commit.submit(3)).resolves.toBe(30);
  });

  it('stops a round at maxRows, but always takes one unit however large', async () => {
    const writer = recordingWriter<number>();
    const commit = new GroupCommit<number, string>(writer.write, (rows) => rows, 100);
    const all = [60, 30, 20, 500, 5].map((rows) => commit.submit(rows));
    for (const expected of [[60, 30], [20], [500], [5]]) {
      await tick();
      expect(writer.rounds.at(-1)).toEqual(expected);
      writer.finishNext();
      await tick();
    }
    await expect(Promise.all(all)).resolves.toHaveLength(5);
  });
});
