import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { npmServiceProcesses, startNpmService } from '../support/npm-service';
import { freePort } from '../support/stack';

jest.setTimeout(400_000);

it('npm start serves a generation over HTTP and leaves no process behind on SIGINT', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'flexy-start-'));
  const port = await freePort();
  const start = startNpmService(dataDir, port);
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
    expect(npmServiceProcesses(dataDir).length).toBeGreaterThanOrEqual(4); // npm, start script, redis, gateway, supervisor, python

    // Ctrl-C in a terminal signals the whole foreground process group.
    process.kill(-start.child.pid!, 'SIGINT');
    const exit = await start.exited();
    expect(exit.code === 0 || exit.signal === 'SIGINT').toBe(true);
    // Give the kernel a moment to reap, then nothing carrying the marker may remain.
    for (let i = 0; i < 50 && npmServiceProcesses(dataDir).length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(npmServiceProcesses(dataDir)).toEqual([]);
  } finally {
    for (const pid of npmServiceProcesses(dataDir)) spawn('kill', ['-9', String(pid)]);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
