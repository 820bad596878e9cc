import { BadRequestException, HttpException, HttpStatus } from '@nestjs/common';

export interface FieldProblem {
  field: string;
  message: string;
}

/** A 400 whose `message` names the field, with every problem listed under `fields`. */
export function badRequest(problems: FieldProblem[]): BadRequestException {
  return new BadRequestException({
    statusCode: 400,
    error: 'Bad Request',
    message: problems.map((p) => p.message).join('; '),
    fields: problems,
  });
}

/** A 429 that says when to come back (the HTTP error filter turns `retry_after_s` into Retry-After). */
export function tooManyRequests(message: string, retryAfterS: number): HttpException {
  return new HttpException({ statusCode: 429, error: 'Too Many Requests', message, retry_after_s: retryAfterS }, HttpStatus.TOO_MANY_REQUESTS);
}
