import { api, type Stack } from './stack';

/** GETs `path` until it answers 200 with JSON for which `done` holds, or the deadline passes. */
export async function pollJson<T = any>(stack: Stack, path: string, headers: Record<string, string>, done: (json: T) => boolean, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await api<T>(stack, 'GET', path, undefined, headers);
    if (r.status === 200 && done(r.json)) return r.json;
    if (Date.now() > deadline) throw new Error(`${path}: condition not met after ${timeoutMs} ms (last: ${r.status} ${r.text.slice(0, 300)})`);
    await new Promise((res) => setTimeout(res, 100));
  }
}
