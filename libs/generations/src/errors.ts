import { BadRequestException, HttpException, HttpStatus, UnprocessableEntityException } from '@nestjs/common';

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
    fields: problems.map(({ field, message }) => ({ field, message })),
  });
}

/**
 * A 422: the request has the documented form, but what it asks for cannot be done (a reference that
 * does not decode, settings one of a batch's engines refuses, too many items). `fields` as for a 400.
 */
export function unprocessable(problems: FieldProblem[]): UnprocessableEntityException {
  return new UnprocessableEntityException({
    statusCode: 422,
    error: 'Unprocessable Entity',
    message: problems.map((p) => p.message).join('; '),
    fields: problems.map(({ field, message }) => ({ field, message })),
  });
}

/** A 429 that says when to come back (the HTTP error filter turns `retry_after_s` into Retry-After). */
export function tooManyRequests(message: string, retryAfterS: number): HttpException {
  return new HttpException({ statusCode: 429, error: 'Too Many Requests', message, retry_after_s: retryAfterS }, HttpStatus.TOO_MANY_REQUESTS);
}
