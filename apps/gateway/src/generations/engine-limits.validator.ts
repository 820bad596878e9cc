import { engineParamErrors, engineSpec, isEngineId } from '@flexy/engines';
import { registerDecorator, type ValidationArguments, type ValidationOptions } from 'class-validator';

/** The request fields the engine limits speak about, with the engine's defaults filled in. */
export function effectiveParams(o: Record<string, unknown>) {
  const spec = engineSpec(o.engine as never);
  const d = spec.defaults;
  return {
    spec,
    params: {
      prompt: typeof o.prompt === 'string' ? o.prompt : '',
      negativePrompt: typeof o.negative_prompt === 'string' ? o.negative_prompt : null,
      steps: (o.steps as number | undefined) ?? d.steps,
      guidance: (o.guidance as number | undefined) ?? d.guidance,
      width: (o.width as number | undefined) ?? d.width,
      height: (o.height as number | undefined) ?? d.height,
      numImages: (o.num_images as number | undefined) ?? 1,
      referenceCount: Array.isArray(o.references) ? o.references.length : 0,
    },
  };
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
          if (!isEngineId(o.engine)) return true; // the engine field reports that itself
          const { spec, params } = effectiveParams(o);
          return engineParamErrors(spec, params).every((e) => e.field !== field);
        },
        defaultMessage(args: ValidationArguments) {
          const { spec, params } = effectiveParams(args.object as Record<string, unknown>);
          return engineParamErrors(spec, params).find((e) => e.field === field)?.message ?? `${field} is out of range`;
        },
      },
    });
}
