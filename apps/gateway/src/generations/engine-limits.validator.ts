import { isEngineId } from '@flexy/engines';
import { resolveParams, type GenerationRequest } from '@flexy/generations';
import { registerDecorator, type ValidationArguments, type ValidationOptions } from 'class-validator';

/** The problems the engine named in the same request finds with it, defaults applied as the core applies them. */
function problemsOf(o: Record<string, unknown>) {
  const references = Array.isArray(o.references) ? o.references.length : 0;
  return resolveParams(o as unknown as GenerationRequest, references).problems;
}

/**
 * Checks one field against the limits of the engine named in the same request (size multiple,
 * pixel budget, step and guidance ranges, prompt length). The rules themselves live in
 * @flexy/engines so the supervisor applies the same ones to payloads read back from Redis.
 */
export function WithinEngineLimits(field: string, options?: ValidationOptions) {
  return (object: object, propertyName: string) =>
    registerDecorator({
      name: 'withinEngineLimits',
      target: object.constructor,
      propertyName,
      options,
      validator: {
        validate(_value: unknown, args: ValidationArguments) {
          const o = args.object as Record<string, unknown>;
          if (!isEngineId(o.engine) || typeof o.prompt !== 'string') return true; // those fields report themselves
          return problemsOf(o).every((e) => e.field !== field);
        },
        defaultMessage(args: ValidationArguments) {
          return problemsOf(args.object as Record<string, unknown>).find((e) => e.field === field)?.message ?? `${field} is out of range`;
        },
      },
    });
}
