import { GENERATION_PARAMS, hasParamType, isEngineId, type FieldError } from '@flexy/engines';
import { resolveParams, type GenerationRequest } from '@flexy/generations';
import { registerDecorator, type ValidationArguments, type ValidationOptions } from 'class-validator';

/** One body's problems, computed once however many of its fields ask (each decorated field does). */
const problemsByBody = new WeakMap<object, FieldError[]>();

/**
 * The problems the engine named in the same request finds with it, defaults applied as the core
 * applies them. A field of the wrong type is left out here: its own type check reports it.
 */
function problemsOf(o: Record<string, unknown>): FieldError[] {
  const known = problemsByBody.get(o);
  if (known) return known;
  const references = Array.isArray(o.references) ? o.references.length : 0;
  const kinds = GENERATION_PARAMS as Record<string, { kind: Parameters<typeof hasParamType>[0] } | undefined>;
  const typed = Object.fromEntries(Object.entries(o).filter(([name, v]) => v == null || !kinds[name] || hasParamType(kinds[name]!.kind, v)));
  const problems = resolveParams(typed as unknown as GenerationRequest, references).problems;
  problemsByBody.set(o, problems);
  return problems;
}

/**
 * Checks one field against the limits of the engine named in the same request (size multiple,
 * pixel budget, step and guidance ranges, prompt length). The rules themselves live in
 * @flexy/engines so the supervisor applies the same ones to payloads read back from Redis.
 */
export function WithinEngineLimits(field: string, options?: ValidationOptions) {
  return engineRule('withinEngineLimits', (e) => e.field === field && e.rule !== 'pixel_budget', `${field} is out of range`, options);
}

/**
 * width × height within the engine's pixel budget: a rule across two fields, which the OpenAPI
 * document states in words only, so its refusal is a 422 (see UNPROCESSABLE_CONSTRAINTS).
 */
export function WithinPixelBudget(options?: ValidationOptions) {
  return engineRule('withinPixelBudget', (e) => e.rule === 'pixel_budget', 'width × height is over the pixel budget', options);
}

function engineRule(name: string, concerns: (e: FieldError) => boolean, fallback: string, options?: ValidationOptions) {
  return (object: object, propertyName: string) =>
    registerDecorator({
      name,
      target: object.constructor,
      propertyName,
      options,
      validator: {
        validate(_value: unknown, args: ValidationArguments) {
          const o = args.object as Record<string, unknown>;
          if (!isEngineId(o.engine) || typeof o.prompt !== 'string') return true; // those fields report themselves
          return !problemsOf(o).some(concerns);
        },
        defaultMessage(args: ValidationArguments) {
          return problemsOf(args.object as Record<string, unknown>).find(concerns)?.message ?? fallback;
        },
      },
    });
}

/** An integer multiple of `step` (width and height against the catalog's size multiple). */
export function IsMultipleOf(step: number, options?: ValidationOptions) {
  return (object: object, propertyName: string) =>
    registerDecorator({
      name: 'isMultipleOf',
      target: object.constructor,
      propertyName,
      options: { message: `$property must be a multiple of ${step}`, ...options },
      validator: { validate: (value: unknown) => typeof value === 'number' && Number.isInteger(value / step) },
    });
}
