import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { SwaggerModule } from '@nestjs/swagger';
import { loadConfig, orExitOnBadConfig, type AppConfig } from '@flexy/config';
import cluster from 'node:cluster';
import type { Server } from 'node:http';
import { HttpErrorFilter } from './common/http-error.filter';
import { loopbackHostOnly, trustProxySetting } from './common/loopback-host.middleware';
import { createValidationPipe } from './common/validation';
import { buildOpenApiDocument } from './openapi/document';
import { runProcessCluster } from './process-cluster';

/**
 * How long an idle keep-alive connection stays open. A client (or the proxy in front) that sends on a
 * connection at the moment the server closes it gets "other side closed" for a request that was never
 * seen; so the server keeps idle connections longer than its clients do: longer than the usual 60 s of
 * load balancers, and it tells clients (Keep-Alive: timeout=65), who close theirs a second before.
 */
const KEEP_ALIVE_MS = 65_000;

async function bootstrap(config: AppConfig): Promise<void> {
  // The module reads the configuration as it loads, so it is loaded only once the configuration passed.
  const { GatewayModule } = await import('./gateway.module');
  const app = await NestFactory.create<NestExpressApplication>(GatewayModule, { bodyParser: false });
  if (config.openAccess) app.use(loopbackHostOnly());
  app.set('trust proxy', trustProxySetting(config.trustProxy));
  // Reference images arrive as base64 in JSON; the cap is what the largest valid request needs, so a
  // larger body is refused (413) before it is buffered in full.
  app.useBodyParser('json', { limit: config.maxBodyBytes });
  app.useGlobalPipes(createValidationPipe());
  app.useGlobalFilters(new HttpErrorFilter(app.getHttpAdapter()));
  app.enableShutdownHooks(['SIGTERM', 'SIGINT']);
  SwaggerModule.setup('docs', app, () => buildOpenApiDocument(app), { jsonDocumentUrl: 'docs/openapi.json' });
  const server = app.getHttpServer() as Server;
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1000; // Node wants it above keepAliveTimeout
  await app.listen(config.port, config.host);
  Logger.log(`listening on http://${config.host}:${config.port}`, 'Gateway');
  if (config.openAccess) Logger.warn('open access: no API key needed (loopback only); set AUTH_MODE=keys to require keys', 'Gateway');
}

// A bad setting ends the process here with its message, before anything starts.
const config = orExitOnBadConfig('gateway', () => loadConfig());
if (config.gatewayProcesses > 1 && cluster.isPrimary) {
  runProcessCluster(config.gatewayProcesses);
} else {
  void bootstrap(config).catch((err) => {
    Logger.error(err instanceof Error ? err.stack : String(err), 'Gateway');
    process.exit(1);
  });
}
