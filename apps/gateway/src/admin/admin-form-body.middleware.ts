import { BadRequestException, Injectable, PayloadTooLargeException, type NestMiddleware } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';

const MAX_FORM_BYTES = 64 * 1024;

/**
 * The gateway parses JSON bodies only; the dashboard's forms post application/x-www-form-urlencoded.
 * A field sent more than once (checkboxes) becomes an array.
 */
@Injectable()
export class AdminFormBodyMiddleware implements NestMiddleware {
  use(req: Request, _res: Response, next: NextFunction): void {
    if (!req.is('application/x-www-form-urlencoded') || req.body !== undefined) return next();
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_FORM_BYTES && !failed) {
        failed = true;
        next(new PayloadTooLargeException(`form bodies are limited to ${MAX_FORM_BYTES} bytes`));
        req.resume();
      } else if (!failed) chunks.push(chunk);
    });
    req.on('error', (err) => {
      if (!failed) next(new BadRequestException(err.message));
      failed = true;
    });
    req.on('end', () => {
      if (failed) return;
      const body: Record<string, string | string[]> = {};
      for (const [key, value] of new URLSearchParams(Buffer.concat(chunks).toString('utf8'))) {
        const seen = body[key];
        body[key] = seen === undefined ? value : Array.isArray(seen) ? [...seen, value] : [seen, value];
      }
      req.body = body;
      next();
    });
  }
}
