import { Logger } from '@nestjs/common';
import cluster, { type Worker } from 'node:cluster';

/** A process that died this soon after its start is restarted after a pause, not at once. */
const QUICK_EXIT_MS = 5_000;
const RESTART_PAUSE_MS = 1_000;
/** On shutdown, processes still alive after this long are killed. */
const STOP_GRACE_MS = 15_000;

/**
 * Runs `count` gateway processes on one port (Node cluster: the primary accepts connections and
 * hands them out round-robin). Every piece of shared state (queue, quotas, sessions, idempotency
 * claims, events) lives in Redis or the database, so the processes need no coordination. The
 * primary only forks, restarts a process that dies, and forwards SIGTERM/SIGINT for a clean stop.
 */
export function runProcessCluster(count: number): void {
  const logger = new Logger('GatewayCluster');
  const startedAt = new Map<Worker, number>();
  let stopping = false;

  const fork = () => startedAt.set(cluster.fork(), Date.now());
  for (let i = 0; i < count; i++) fork();
  logger.log(`${count} gateway processes`);

  cluster.on('exit', (worker, code, signal) => {
    const lived = Date.now() - (startedAt.get(worker) ?? 0);
    startedAt.delete(worker);
    if (stopping) {
      if (startedAt.size === 0) process.exit(0);
      return;
    }
    logger.error(`gateway process ${worker.process.pid} exited (${signal ?? code}); starting another`);
    setTimeout(fork, lived < QUICK_EXIT_MS ? RESTART_PAUSE_MS : 0);
  });

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    for (const worker of startedAt.keys()) worker.process.kill(signal);
    if (startedAt.size === 0) process.exit(0);
    setTimeout(() => {
      for (const worker of startedAt.keys()) worker.process.kill('SIGKILL');
      process.exit(1);
    }, STOP_GRACE_MS).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
