import { HttpException, Logger, NotFoundException, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { Catch } from '@nestjs/common';
import type { HttpServer } from '@nestjs/common';
import type { Express, Request, Response } from 'express';
import { STATUS_CODES } from 'node:http';
import { allowedMethods } from './allowed-methods';

/** Fields an error body may carry besides statusCode, error and message (see ErrorBody). */
const EXTRA_FIELDS = ['fields', 'retry_after_s', 'generation'] as const;

export interface ErrorAnswer {
  status: number;
  body: { statusCode: number; error: string; message: string } & Record<string, unknown>;
}

/** An error body of the one documented shape: statusCode, the reason phrase, a message, and the extras that apply. */
export function errorAnswer(status: number, message: string, extras: Record<string, unknown> = {}): ErrorAnswer {
  const body: ErrorAnswer['body'] = { statusCode: status, error: STATUS_CODES[status] ?? 'Error', message };
  for (const key of EXTRA_FIELDS) if (extras[key] !== undefined) body[key] = extras[key];
  return { status, body };
}

/** Errors raised by Express's body parser (http-errors): a status the client caused and a safe message. */
interface ParserError {
  status: number;
  expose: boolean;
  type?: string;
  limit?: number;
  message: string;
}

function isParserError(err: unknown): err is ParserError {
  const e = err as Partial<ParserError> | null;
  return !!e && typeof e.status === 'number' && e.status >= 400 && e.status < 500 && e.expose === true;
}

/**
 * Every error the service answers, in one shape: `{statusCode, error, message}` plus `fields` (what
 * is wrong with which field), `retry_after_s` (also sent as Retry-After on 429 and 503) or
 * `generation` (the job a synchronous call gave up on, or that failed). That holds for the
 * controllers' exceptions, the validation pipe, Nest's router (an unknown path is a 404; a known
 * path with a method it does not answer is a 405 with Allow, and OPTIONS answers Allow), the body
 * parser (413 past MAX_BODY_BYTES, 400 for malformed JSON) and anything unexpected (a 500 that
 * says nothing about the internals; the stack goes to the log).
 */
@Catch()
export class HttpErrorFilter implements ExceptionFilter {
  private readonly logger = new Logger('HttpErrorFilter');

  constructor(private readonly adapter: HttpServer) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const req = host.switchToHttp().getRequest<Request>();
    const res = host.switchToHttp().getResponse<Response>();
    if (res.headersSent) {
      // A stream that had already started (SSE, an image) cannot change its status any more.
      this.logger.warn(`error after the answer started (${req.method} ${req.path}): ${String((exception as Error)?.message ?? exception)}`);
      res.end();
      return;
    }
    if (exception instanceof NotFoundException && !req.route) {
      const allow = allowedMethods(this.adapter.getInstance() as Express, req.path);
      if (allow.length) {
        res.setHeader('Allow', allow.join(', '));
        if (req.method === 'OPTIONS') {
          res.status(204).end();
          return;
        }
        this.send(res, errorAnswer(405, `${req.method} is not allowed on ${req.path}; allowed: ${allow.join(', ')}`));
        return;
      }
      this.send(res, errorAnswer(404, `no route ${req.method} ${req.path}`));
      return;
    }
    this.send(res, this.answerFor(exception));
  }

  private answerFor(exception: unknown): ErrorAnswer {
    if (exception instanceof HttpException) {
      const status = exception.getStatus();
      const response = exception.getResponse();
      if (typeof response === 'string') return errorAnswer(status, response);
      const r = response as { message?: unknown } & Record<string, unknown>;
      const message = Array.isArray(r.message) ? r.message.join('; ') : typeof r.message === 'string' ? r.message : exception.message;
      return errorAnswer(status, message, r);
    }
    if (isParserError(exception)) {
      if (exception.type === 'entity.too.large') return errorAnswer(413, `the request body is larger than ${exception.limit} bytes`);
      return errorAnswer(exception.status, exception.message);
    }
    this.logger.error(exception instanceof Error ? exception.stack : String(exception));
    return errorAnswer(500, 'internal error');
  }

  private send(res: Response, { status, body }: ErrorAnswer): void {
    if (status === 429 || status === 503) {
      // Both say "come back later": always with when.
      body.retry_after_s = typeof body.retry_after_s === 'number' ? body.retry_after_s : 1;
      res.setHeader('Retry-After', String(body.retry_after_s));
    }
    res.status(status).json(body);
  }
}
