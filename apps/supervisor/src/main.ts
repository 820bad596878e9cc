import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { loadConfig, orExitOnBadConfig, type AppConfig } from '@flexy/config';
import { QueueWorkerService } from './jobs/queue-worker.service';

/** After the grace period: the interrupt between steps (10 s at most) and the workers' own stop. */
const STOP_LIMIT_AFTER_GRACE_MS = 20_000;

/** The supervisor has no HTTP surface: it consumes queues and owns this host's Python workers. */
async function bootstrap(config: AppConfig): Promise<void> {
  // The module reads the configuration as it loads, so it is loaded only once the configuration passed.
  const { SupervisorModule } = await import('./supervisor.module');
  const app = await NestFactory.createApplicationContext(SupervisorModule, { bufferLogs: false });
  // Not Nest's shutdown hooks: they re-raise the signal at the end (exit by SIGTERM, not 0), and they
  // run onModuleDestroy (the database client among them) before the running jobs have finished.
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      // A terminal's Ctrl-C reaches both this process and its parent (which then sends SIGTERM): only
      // a second SIGINT means "now".
      if (signal !== 'SIGINT') return;
      Logger.warn('SIGINT again: exiting now; jobs still held return to the queue when their locks expire', 'Supervisor');
      process.exit(1);
    }
    stopping = true;
    Logger.log(`${signal}: finishing or handing back running jobs, then stopping the workers`, 'Supervisor');
    // Every step below has its own bound, but one waits on Redis (a job put back), which may be away:
    // past this, jobs still held return to the queue when their locks expire, or by the reconciler.
    setTimeout(() => {
      Logger.warn(`not stopped ${STOP_LIMIT_AFTER_GRACE_MS} ms after the grace period; exiting now`, 'Supervisor');
      process.exit(1);
    }, config.supervisorGraceMs + STOP_LIMIT_AFTER_GRACE_MS).unref();
    void app
      .get(QueueWorkerService)
      .drain(config.supervisorGraceMs)
      .then(() => app.close())
      .then(
        () => {
          Logger.log('stopped', 'Supervisor');
          process.exit(0);
        },
        (err: Error) => {
          Logger.error(`shutdown failed: ${err.stack ?? err.message}`, 'Supervisor');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  Logger.log(`supervisor ${process.pid} started`, 'Supervisor');
}

// A bad setting ends the process here with its message, before any worker starts.
const config = orExitOnBadConfig('supervisor', () => loadConfig());
void bootstrap(config).catch((err) => {
  Logger.error(err instanceof Error ? err.stack : String(err), 'Supervisor');
  process.exit(1);
});
