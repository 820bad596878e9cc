import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, manage, MODELS_DIR, ROOT } from '../support/stack';

jest.setTimeout(400_000);

/** PIDs of every process whose environment carries this marker (all of npm start's descendants do). */
function processesWithMarker(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(marker)) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

it('npm start serves a generation over HTTP and leaves no process behind on SIGINT', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'flexy-start-'));
  const port = await freePort();
  const marker = `FLEXY_TEST_MARKER=${dataDir}`;
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, MODELS_DIR, PORT: String(port), FLEXY_TEST_MARKER: dataDir };
  delete env.REDIS_URL;
  delete env.DATABASE_URL;
  const start = manage('npm-start', 'npm', ['start'], env, ROOT, { ownProcessGroup: true });
  try {
    await start.waitFor(/ready: http:\/\/127\.0\.0\.1/, 300_000);
    const url = `http://127.0.0.1:${port}`;
    const created = await fetch(`${url}/v1/generations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'a small boat', engine: 'sd3_medium', seed: 3, steps: 2, width: 64, height: 64 }),
    });
    expect(created.status).toBe(202);
    const { id } = (await created.json()) as { id: string };
    let g: { status: string; image_url: string | null } = { status: 'queued', image_url: null };
    for (let i = 0; i < 600 && ['queued', 'running'].includes(g.status); i++) {
      await new Promise((r) => setTimeout(r, 200));
      g = (await (await fetch(`${url}/v1/generations/${id}`)).json()) as typeof g;
    }
    expect(g.status).toBe('succeeded');
    const image = await fetch(url + g.image_url);
    expect(image.headers.get('content-type')).toBe('image/png');
    expect(processesWithMarker(marker).length).toBeGreaterThanOrEqual(4); // npm, start script, redis, gateway, supervisor, python

    // Ctrl-C in a terminal signals the whole foreground process group.
    process.kill(-start.child.pid!, 'SIGINT');
    const exit = await start.exited();
    expect(exit.code === 0 || exit.signal === 'SIGINT').toBe(true);
    // Give the kernel a moment to reap, then nothing carrying the marker may remain.
    for (let i = 0; i < 50 && processesWithMarker(marker).length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(processesWithMarker(marker)).toEqual([]);
  } finally {
    for (const pid of processesWithMarker(marker)) spawn('kill', ['-9', String(pid)]);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
