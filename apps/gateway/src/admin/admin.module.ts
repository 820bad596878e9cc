import { Module, type MiddlewareConsumer, type NestModule } from '@nestjs/common';
import { loadConfig } from '@flexy/config';
import { AdminApiController } from './admin-api.controller';
import { AdminAssetsController } from './admin-assets.controller';
import { AdminFormBodyMiddleware } from './admin-form-body.middleware';
import { AdminHeadersMiddleware } from './admin-headers.middleware';
import { AdminPagesController } from './admin-pages.controller';
import { ADMIN_CREDENTIALS, loadAdminCredentials } from './auth/admin-credentials';
import { AdminAuthController } from './auth/admin-auth.controller';
import { AdminGuard } from './auth/admin.guard';
import { AdminSessionService } from './auth/admin-session.service';
import { BatchAdminService } from './batches/batch-admin.service';
import { GatewayServices } from './gateway-services';
import { JobAdminService } from './jobs/job-admin.service';
import { LiveRegions } from './live-regions.service';
import { QueueAdminService } from './queues/queue-admin.service';
import { SandboxAdminService } from './sandbox/sandbox-admin.service';
import { WorkerStatusReader } from './workers/worker-status.reader';

/**
 * The operator dashboard at /admin (pages) and /admin/api (JSON): queues, workers, jobs, sandbox
 * comparisons and batches, behind a session login or an admin key. See README.md here.
 */
@Module({
  controllers: [AdminAuthController, AdminPagesController, AdminApiController, AdminAssetsController],
  providers: [
    GatewayServices,
    {
      provide: ADMIN_CREDENTIALS,
      useFactory: () => {
        const { host, port, adminPassword, adminReadonlyPassword } = loadConfig();
        return loadAdminCredentials({ host, port, adminPassword, adminReadonlyPassword });
      },
    },
    AdminSessionService,
    AdminGuard,
    QueueAdminService,
    WorkerStatusReader,
    JobAdminService,
    SandboxAdminService,
    BatchAdminService,
    LiveRegions,
  ],
})
export class AdminModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(AdminHeadersMiddleware).forRoutes(AdminAuthController, AdminPagesController, AdminApiController, AdminAssetsController);
    consumer.apply(AdminFormBodyMiddleware).forRoutes(AdminAuthController, AdminApiController);
  }
}
