import { ArgumentsHost, Catch, HttpException } from '@nestjs/common';
import { BaseExceptionFilter } from '@nestjs/core';
import type { Response } from 'express';

/** Adds Retry-After to 429 and 503 answers that carry `retry_after_s`, then answers as Nest does. */
@Catch(HttpException)
export class HttpErrorFilter extends BaseExceptionFilter {
  override catch(exception: HttpException, host: ArgumentsHost): void {
    const body = exception.getResponse() as { retry_after_s?: number } | string;
    const status = exception.getStatus();
    if ((status === 429 || status === 503) && typeof body === 'object') {
      host.switchToHttp().getResponse<Response>().setHeader('Retry-After', String(body.retry_after_s ?? 1));
    }
    super.catch(exception, host);
  }
}
