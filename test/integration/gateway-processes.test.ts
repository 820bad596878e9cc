import { supervisorMetricsKey } from '@flexy/contracts';
import IORedis from 'ioredis';
import { execFileSync } from 'node:child_process';
import { get } from 'node:http';
import { Counter, Registry } from 'prom-client';
import { api, startStack, type Stack } from '../support/stack';

jest.setTimeout(120_000);

/** The gateway processes the cluster primary has forked. */
function childPids(stack: Stack): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(stack.gateway.child.pid)], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    return []; // pgrep exits 1 when there are none
  }
}

async function until<T>(probe: () => T | undefined, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const body = (i: number) => ({ prompt: `a lighthouse, take ${i}`, engine: 'sd3_medium', seed: i, steps: 2, width: 64, height: 64 });

describe('GATEWAY_PROCESSES=2: several gateway processes on one port', () => {
  let stack: Stack;
  beforeAll(async () => {
    // No supervisor: the jobs stay queued, which is what these checks read.
    stack = await startStack({ supervisors: 0, env: { GATEWAY_PROCESSES: '2' } });
  });
  afterAll(async () => stack?.stop());

  it('serves concurrent creates with two processes running, each recorded and queued once', async () => {
    const pids = await until(() => (childPids(stack).length === 2 ? childPids(stack) : undefined), 30_000);
    expect(new Set(pids).size).toBe(2);
    const created = await Promise.all(Array.from({ length: 40 }, (_, i) => api(stack, 'POST', '/v1/generations', body(i))));
    expect(created.map((r) => r.status)).toEqual(Array(40).fill(202));
    const ids = created.map((r) => r.json.id as string);
    expect(new Set(ids).size).toBe(40);
    // Whichever process answers a read sees every record.
    const read = await Promise.all(ids.map((id) => api(stack, 'GET', `/v1/generations/${id}`)));
    expect(read.map((r) => [r.status, r.json.status, r.json.parameters.seed])).toEqual(ids.map((_, i) => [200, 'queued', i]));
    const engines = await api(stack, 'GET', '/v1/engines');
    expect((engines.json.engines as Array<{ id: string; queue_depth: number }>).find((e) => e.id === 'sd3_medium')?.queue_depth).toBe(40);
    // And in the queue itself (interactive work waits as prioritized jobs).
    const metrics = await fetch(`${stack.url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/flexy_queue_jobs\{queue="generation",state="prioritized"\} 40\b/);
  });

  it("serves the same supervisor series from whichever process answers (they come from Redis, not a process's memory)", async () => {
    // A supervisor's registry as it publishes it.
    const registry = new Registry();
    registry.setDefaultLabels({ supervisor: 'host-a' });
    const outcomes = new Counter({ name: 'flexy_generation_outcomes_total', help: 'h', labelNames: ['engine', 'status', 'error_code'], registers: [registry] });
    outcomes.inc({ engine: 'sd3_medium', status: 'failed', error_code: 'oom' }, 3);
    const redis = new IORedis(stack.redisUrl);
    try {
      await redis.set(supervisorMetricsKey('host-a'), JSON.stringify(await registry.getMetricsAsJSON()), 'EX', 60);
      // A new connection each time, so the cluster hands the scrapes to both processes.
      const scrape = () =>
        new Promise<string>((resolve, reject) => {
          get(`${stack.url}/metrics`, { agent: false }, (res) => {
            let text = '';
            res.on('data', (d) => (text += d));
            res.on('end', () => resolve(text));
          }).on('error', reject);
        });
      // The primary hands new connections to its processes in turn: ten scrapes reach both.
      const texts = await Promise.all(Array.from({ length: 10 }, () => scrape()));
      for (const text of texts) {
        expect(text).toContain('flexy_generation_outcomes_total{engine="sd3_medium",status="failed",error_code="oom",supervisor="host-a"} 3\n');
      }
    } finally {
      await redis.del(supervisorMetricsKey('host-a'));
      redis.disconnect();
    }
  });

  it('replaces a process that dies, and keeps answering meanwhile', async () => {
    const [victim, survivor] = childPids(stack);
    process.kill(victim, 'SIGKILL');
    // Connections the dead process held are lost with it (as with any crashed server); new ones go to
    // the live process once the primary has seen the exit.
    await stack.gateway.waitFor(new RegExp(`gateway process ${victim} exited \\(SIGKILL\\); starting another`), 10_000);
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => api(stack, 'POST', '/v1/generations', body(100 + i))));
    expect(answers.map((r) => r.status)).toEqual(Array(10).fill(202));
    const replaced = await until(() => {
      const now = childPids(stack);
      return now.length === 2 && !now.includes(victim) ? now : undefined;
    }, 30_000);
    expect(replaced).toContain(survivor);
  });

  it('stops every process on SIGTERM to the primary', async () => {
    const pids = childPids(stack);
    stack.gateway.child.kill('SIGTERM');
    const exit = await stack.gateway.exited();
    expect(exit.code).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});
