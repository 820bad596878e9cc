import type { EngineSpec } from './catalog';
import type { GenerationParams } from './params';

/** Request parameters as an engine sees them, after defaults are applied (the seed is checked on its own). */
export type EngineParams = Omit<GenerationParams, 'seed'> & { referenceCount?: number };

export interface FieldError {
  field: string;
  message: string;
}

/** A UTF-16 surrogate without its partner: not Unicode text, and no text encoder can take it. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Why a piece of request text cannot be used as a prompt, or null: it must be well-formed Unicode
 * (no lone surrogates) without NUL characters (which PostgreSQL's text type refuses).
 */
export function textProblem(field: string, text: string): FieldError | null {
  if (LONE_SURROGATE.test(text)) return { field, message: `${field} must be well-formed Unicode text (it holds an unpaired surrogate)` };
  if (text.includes('\u0000')) return { field, message: `${field} must not contain NUL characters` };
  return null;
}

/**
 * Checks parameters against one engine's limits. The gateway's DTO validation and the supervisor's
 * re-validation of payloads read back from Redis both call this, so the two never disagree.
 */
export function engineParamErrors(spec: EngineSpec, p: EngineParams): FieldError[] {
  const { limits } = spec;
  const errors: FieldError[] = [];
  const fail = (field: string, message: string) => errors.push({ field, message: `${field} ${message}` });

  for (const [field, text] of [['prompt', p.prompt], ['negative_prompt', p.negative_prompt]] as const) {
    const problem = text == null ? null : textProblem(field, text);
    if (problem) errors.push(problem);
  }
  if (p.prompt.trim().length === 0) fail('prompt', 'must not be empty');
  if (p.prompt.length > limits.maxPromptChars)
    fail('prompt', `must be at most ${limits.maxPromptChars} characters for ${spec.id}`);
  if (p.negative_prompt != null) {
    if (!limits.negativePrompt) fail('negative_prompt', `is not supported by ${spec.id} (guidance-distilled)`);
    else if (p.negative_prompt.length > limits.maxPromptChars)
      fail('negative_prompt', `must be at most ${limits.maxPromptChars} characters for ${spec.id}`);
  }
  for (const side of ['width', 'height'] as const) {
    const v = p[side];
    if (!Number.isInteger(v) || v % limits.sizeMultiple !== 0)
      fail(side, `must be a multiple of ${limits.sizeMultiple} for ${spec.id}`);
    else if (v < limits.minSide || v > limits.maxSide)
      fail(side, `must be between ${limits.minSide} and ${limits.maxSide} for ${spec.id}`);
  }
  if (p.width * p.height > limits.maxPixels)
    fail('width', `× height must be at most ${limits.maxPixels} pixels for ${spec.id} (got ${p.width * p.height})`);
  if (!Number.isInteger(p.steps) || p.steps < limits.steps.min || p.steps > limits.steps.max)
    fail('steps', `must be an integer between ${limits.steps.min} and ${limits.steps.max} for ${spec.id}`);
  if (!Number.isFinite(p.guidance) || p.guidance < limits.guidance.min || p.guidance > limits.guidance.max)
    fail('guidance', `must be between ${limits.guidance.min} and ${limits.guidance.max} for ${spec.id}`);
  if (!Number.isInteger(p.num_images) || p.num_images < 1 || p.num_images > limits.maxImages)
    fail('num_images', `must be an integer between 1 and ${limits.maxImages}`);
  const refs = p.referenceCount ?? 0;
  if (refs > limits.maxReferences)
    fail(
      'references',
      limits.maxReferences === 0
        ? `are not supported by ${spec.id}`
        : `must be at most ${limits.maxReferences} images for ${spec.id}`,
    );
  return errors;
}
