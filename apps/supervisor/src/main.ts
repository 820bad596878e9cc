import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { SupervisorModule } from './supervisor.module';

/** The supervisor has no HTTP surface: it consumes queues and owns this host's Python workers. */
async function bootstrap(): Promise<void> {
  const app = await NestFactory.createApplicationContext(SupervisorModule, { bufferLogs: false });
  app.enableShutdownHooks(['SIGTERM', 'SIGINT']);
  Logger.log(`supervisor ${process.pid} started`, 'Supervisor');
}

void bootstrap().catch((err) => {
  Logger.error(err instanceof Error ? err.stack : String(err), 'Supervisor');
  process.exit(1);
});
