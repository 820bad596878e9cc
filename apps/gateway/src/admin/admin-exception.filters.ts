import { ArgumentsHost, Catch, HttpException, Logger, type ExceptionFilter } from '@nestjs/common';
import type { Request, Response } from 'express';
import { ASSET_VERSION } from './admin-assets.controller';
import { AdminAuthRequiredException } from './auth/admin.guard';
import { errorPage } from './views/layout';

function messageOf(exception: HttpException): string {
  const body = exception.getResponse();
  if (typeof body === 'string') return body;
  const message = (body as { message?: unknown }).message;
  return Array.isArray(message) ? message.join('; ') : String(message ?? exception.message);
}

/**
 * Pages: an anonymous visitor is sent to the login page (and back afterwards); other errors get an
 * HTML page. A live stream (EventSource) gets the bare status, which makes the page reload.
 */
@Catch()
export class AdminPageExceptionFilter implements ExceptionFilter {
  private readonly logger = new Logger('AdminPages');

  catch(exception: unknown, host: ArgumentsHost): void {
    const req = host.switchToHttp().getRequest<Request>();
    const res = host.switchToHttp().getResponse<Response>();
    if (res.headersSent) {
      if (!res.writableEnded) res.end();
      return;
    }
    const live = req.query.live === '1' || req.query.partial === '1';
    if (exception instanceof AdminAuthRequiredException && !live && req.method === 'GET') {
      res.redirect(303, `/admin/login?next=${encodeURIComponent(req.originalUrl)}`);
      return;
    }
    const status = exception instanceof HttpException ? exception.getStatus() : 500;
    if (!(exception instanceof HttpException)) this.logger.error(exception instanceof Error ? exception.stack : String(exception));
    const message = exception instanceof HttpException ? messageOf(exception) : 'internal error';
    if (live) {
      res.status(status).type('text').send(message);
      return;
    }
    res.status(status).type('html').send(errorPage(ASSET_VERSION, status, message));
  }
}

/** The JSON API: Nest's usual error bodies, plus the challenge header on 401. */
@Catch(AdminAuthRequiredException)
export class AdminApiAuthFilter implements ExceptionFilter {
  catch(exception: AdminAuthRequiredException, host: ArgumentsHost): void {
    const res = host.switchToHttp().getResponse<Response>();
    res.status(401).set('WWW-Authenticate', 'Bearer realm="flexyface-admin"').json(exception.getResponse());
  }
}
