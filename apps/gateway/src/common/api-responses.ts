import { applyDecorators, type Type } from '@nestjs/common';
import { ApiExtraModels, ApiProperty, ApiPropertyOptional, ApiResponse, getSchemaPath, type ApiResponseOptions } from '@nestjs/swagger';
import { GENERATION_STATUSES } from '@flexy/contracts';

export class FieldProblemView {
  @ApiProperty({ description: 'The request field, e.g. `width` or `references[1]`.' })
  field!: string;

  @ApiProperty()
  message!: string;
}

export class GenerationLinksView {
  @ApiProperty({ example: '/v1/generations/gen_0123456789abcdef0123456789abcdef' }) self!: string;
  @ApiProperty({ example: '/v1/generations/gen_0123456789abcdef0123456789abcdef/image?index=0' }) image!: string;
  @ApiProperty({ example: '/v1/generations/gen_0123456789abcdef0123456789abcdef/events' }) events!: string;
  @ApiProperty({ example: '/v1/generations/gen_0123456789abcdef0123456789abcdef/cancel' }) cancel!: string;
}

export class GenerationFailureView {
  @ApiProperty({ description: 'Failure class: bad_input, oom, engine_unavailable, worker_lost, internal, …' })
  code!: string;

  @ApiProperty({ type: String, nullable: true })
  message!: string | null;

  @ApiProperty({ type: String, nullable: true, description: 'The request field at fault, for bad_input.' })
  field!: string | null;
}

/** The generation a synchronous call (POST /generate) gave up waiting for, or that did not succeed. */
export class ErrorGenerationView {
  @ApiProperty()
  id!: string;

  @ApiProperty({ enum: GENERATION_STATUSES })
  status!: string;

  @ApiPropertyOptional({ type: () => GenerationLinksView, description: 'Where to poll it (504).' })
  links?: GenerationLinksView;

  @ApiPropertyOptional({ type: () => GenerationFailureView, nullable: true, description: 'Why it failed.' })
  error?: GenerationFailureView | null;
}

/** The one shape of every error answer (see HttpErrorFilter). */
export class ErrorBody {
  @ApiProperty({ type: 'integer', minimum: 400, maximum: 599, example: 400 })
  statusCode!: number;

  @ApiProperty({ description: 'The HTTP reason phrase.', example: 'Bad Request' })
  error!: string;

  @ApiProperty({ description: 'What went wrong; for bad input it names the field.', example: 'width must be a multiple of 16 for flux1_dev' })
  message!: string;

  @ApiPropertyOptional({ type: () => [FieldProblemView], description: 'Each problem with the request (400, 422).' })
  fields?: FieldProblemView[];

  @ApiPropertyOptional({ type: 'integer', minimum: 0, description: 'Seconds to wait before trying again (429, 503); also sent as Retry-After.' })
  retry_after_s?: number;

  @ApiPropertyOptional({ type: () => ErrorGenerationView })
  generation?: ErrorGenerationView;
}

const RETRY_AFTER = { 'Retry-After': { description: 'Seconds to wait before trying again.', schema: { type: 'integer', minimum: 0 } } };

/** What each error status means on this API; a route lists the ones it can answer. */
const ERROR_MEANINGS: Record<number, string> = {
  400: 'The request breaks a rule this document states; `message` names the field and `fields` lists each problem. Nothing was recorded or queued.',
  401: 'An API key is required (keys mode), or the key is unknown or revoked.',
  403: 'A read-only key tried to write; or, in open mode, the Host header is not a loopback name.',
  404: 'No such resource for this key (another key’s resources are not found either).',
  409: 'The resource is not in a state that allows this.',
  413: 'The body is larger than MAX_BODY_BYTES.',
  422: 'The request fits this document but cannot be carried out as asked; `fields` says why.',
  429: 'Rate or concurrent-job quota reached; come back after Retry-After seconds.',
  503: 'The job queue is unavailable; come back after Retry-After seconds.',
};

/** Documents error answers (all of the ErrorBody shape), with the route's own wording where it has one. */
export function ApiErrors(...statuses: Array<number | [number, string]>) {
  return applyDecorators(
    ApiExtraModels(ErrorBody),
    ...statuses.map((entry) => {
      const [status, description] = Array.isArray(entry) ? entry : [entry, ERROR_MEANINGS[entry]];
      return ApiResponse({
        status,
        description: description ?? ERROR_MEANINGS[status],
        content: { 'application/json': { schema: { $ref: getSchemaPath(ErrorBody) } } },
        ...(status === 429 || status === 503 ? { headers: RETRY_AFTER } : {}),
      });
    }),
  );
}

/** The errors every route of the public API can answer, whatever it does. */
export const COMMON_ERRORS = [401, 429] as const;

/** A JSON answer with a typed body, OpenAPI links and headers. */
export function ApiJson(status: number, type: Type<unknown>, description: string, extra: Pick<ApiResponseOptions, 'links' | 'headers'> = {}) {
  return ApiResponse({ status, type, description, ...extra });
}
