/**
 * The parameters of one generation, named as the public API and the worker's wire protocol name them.
 * Every layer passes them as this one object: the request (with defaults filled in), the queued job,
 * the record (one column each), the wire message and the view. Adding a parameter touches this type
 * and table, the request DTO, a column in prisma/schema.prisma (with its generated migration), the
 * worker's GenerateMessage (worker-python/flexy_worker/protocol.py) and the engine code that uses it.
 */
export interface GenerationParams {
  prompt: string;
  negative_prompt: string | null;
  seed: number;
  steps: number;
  guidance: number;
  width: number;
  height: number;
  num_images: number;
}

export type ParamKind = 'text' | 'optional-text' | 'integer' | 'number';

/**
 * For each parameter: how a value read back from outside (Redis) is type-checked, the record column
 * that holds it, and where its default comes from when a request leaves it out (`engine`: the
 * engine's catalog defaults; a value; or `random` for the seed). Range rules live in `engineParamErrors`.
 */
export const GENERATION_PARAMS: { readonly [K in keyof GenerationParams]: { kind: ParamKind; column: string; default: 'required' | 'engine' | 'random' | GenerationParams[K] } } = {
  prompt: { kind: 'text', column: 'prompt', default: 'required' },
  negative_prompt: { kind: 'optional-text', column: 'negativePrompt', default: null },
  seed: { kind: 'integer', column: 'seed', default: 'random' },
  steps: { kind: 'integer', column: 'steps', default: 'engine' },
  guidance: { kind: 'number', column: 'guidance', default: 'engine' },
  width: { kind: 'integer', column: 'width', default: 'engine' },
  height: { kind: 'integer', column: 'height', default: 'engine' },
  num_images: { kind: 'integer', column: 'numImages', default: 1 },
};

export const GENERATION_PARAM_NAMES = Object.keys(GENERATION_PARAMS) as Array<keyof GenerationParams>;

/** Whether a value has the type its parameter's kind asks for. */
export function hasParamType(kind: ParamKind, v: unknown): boolean {
  if (kind === 'text') return typeof v === 'string';
  if (kind === 'optional-text') return v === null || typeof v === 'string';
  return kind === 'integer' ? Number.isInteger(v) : typeof v === 'number' && Number.isFinite(v);
}

/** Type problems of a parameter object read from outside, one message per bad field. */
export function paramTypeProblems(value: Record<string, unknown>): string[] {
  const problems: string[] = [];
  for (const name of GENERATION_PARAM_NAMES) {
    const kind = GENERATION_PARAMS[name].kind;
    if (!hasParamType(kind, value[name])) problems.push(`${name} must be ${kind === 'optional-text' ? 'a string or null' : kind === 'text' ? 'a string' : `a finite ${kind}`}`);
  }
  return problems;
}
