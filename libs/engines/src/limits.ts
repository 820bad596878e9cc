import { ENGINE_CATALOG, type EngineSpec, type Range } from './catalog';
import type { GenerationParams } from './params';

/** Request parameters as an engine sees them, after defaults are applied (the seed is checked on its own). */
export type EngineParams = Omit<GenerationParams, 'seed'> & { referenceCount?: number };

export interface FieldError {
  field: string;
  message: string;
  /**
   * 'pixel_budget': width × height over the engine's budget. It compares two fields, which JSON
   * Schema cannot do, so the API answers it apart (422) from the rules its document states (400).
   */
  rule?: 'pixel_budget';
}

/** A UTF-16 surrogate without its partner: not Unicode text, and no text encoder can take it. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * The characters JavaScript counts as whitespace (what String.prototype.trim removes), spelled out so
 * that every regular-expression dialect reading the API's JSON Schema agrees on them.
 */
export const WHITESPACE_CLASS = '\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff';
/** JSON Schema pattern of a prompt: at least one character that is not whitespace, and no NUL. */
export const PROMPT_PATTERN = `^[^\\u0000]*[^\\u0000${WHITESPACE_CLASS}][^\\u0000]*$`;
/** JSON Schema pattern of other request text (a negative prompt): no NUL. */
export const TEXT_PATTERN = '^[^\\u0000]*$';

/** Text length as the API counts it: in Unicode code points, as JSON Schema's maxLength does. */
export function textLength(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

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
  if (textLength(p.prompt) > limits.maxPromptChars)
    fail('prompt', `must be at most ${limits.maxPromptChars} characters for ${spec.id}`);
  if (p.negative_prompt != null) {
    if (!limits.negativePrompt) fail('negative_prompt', `is not supported by ${spec.id} (guidance-distilled)`);
    else if (textLength(p.negative_prompt) > limits.maxPromptChars)
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
    errors.push({ field: 'width', message: `width × height must be at most ${limits.maxPixels} pixels for ${spec.id} (got ${p.width * p.height})`, rule: 'pixel_budget' });
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

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

const specs = () => Object.values(ENGINE_CATALOG);
const widest = (pick: (s: EngineSpec) => Range): Range => ({ min: Math.min(...specs().map((s) => pick(s).min)), max: Math.max(...specs().map((s) => pick(s).max)) });

/**
 * The loosest limits over every engine: what a request naming several engines at once (a batch, a
 * sandbox run) must stay within before each engine checks its own. A value outside these suits no
 * engine at all.
 */
export function catalogBounds() {
  return {
    sizeMultiple: specs().map((s) => s.limits.sizeMultiple).reduce(gcd),
    side: widest((s) => ({ min: s.limits.minSide, max: s.limits.maxSide })),
    steps: widest((s) => s.limits.steps),
    guidance: widest((s) => s.limits.guidance),
    maxPromptChars: Math.max(...specs().map((s) => s.limits.maxPromptChars)),
  };
}
