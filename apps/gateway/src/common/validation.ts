import { applyDecorators, ValidationPipe, type ValidationError } from '@nestjs/common';
import { badRequest, unprocessable, type FieldProblem } from '@flexy/generations';
import { IsDefined, ValidateIf } from 'class-validator';

/**
 * Checks whose refusal is a 422, not a 400: the request has the documented form, but what it asks
 * for cannot be done (a webhook target that is not public, a size over the engine's pixel budget).
 * JSON Schema cannot state these rules.
 */
const UNPROCESSABLE_CONSTRAINTS = new Set(['isWebhookTarget', 'withinPixelBudget']);

interface Problem extends FieldProblem {
  unprocessable: boolean;
}

function flatten(errors: ValidationError[], parent = ''): Problem[] {
  return errors.flatMap((e) => {
    const field = parent ? `${parent}.${e.property}` : e.property;
    const own = Object.entries(e.constraints ?? {}).map(([name, message]) => ({ field, message, unprocessable: UNPROCESSABLE_CONSTRAINTS.has(name) }));
    return [...own, ...flatten(e.children ?? [], field)];
  });
}

/**
 * An optional field: absent means the default, and an explicit `null` is refused (400) rather than
 * read as absent, so the document can say "not nullable" and mean it.
 */
export function OptionalNotNull() {
  return applyDecorators(
    ValidateIf((_object: object, value: unknown) => value !== undefined),
    IsDefined({ message: '$property must not be null (leave it out for the default)' }),
  );
}

/** Unknown fields are refused, types are not coerced: what the client sent is what is checked. */
export function createValidationPipe(): ValidationPipe {
  return new ValidationPipe({
    whitelist: true,
    forbidNonWhitelisted: true,
    transform: true,
    transformOptions: { enableImplicitConversion: false },
    validationError: { target: false, value: false },
    exceptionFactory: (errors) => {
      const problems = flatten(errors);
      const fields = problems.map(({ field, message }) => ({ field, message }));
      // A request that also breaks a stated rule is a 400; one whose only problems JSON Schema cannot state, a 422.
      return problems.every((p) => p.unprocessable) ? unprocessable(fields) : badRequest(fields);
    },
  });
}
