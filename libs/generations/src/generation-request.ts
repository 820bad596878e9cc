import { SEED_RANGE, type GenerateJobPayload, type JobOrigin } from '@flexy/contracts';
import {
  ENGINE_IDS,
  engineParamErrors,
  engineSpec,
  GENERATION_PARAM_NAMES,
  GENERATION_PARAMS,
  textProblem,
  type EngineId,
  type FieldError,
  type GenerationParams,
} from '@flexy/engines';
import { randomInt, randomUUID } from 'node:crypto';
import { badRequest, unprocessable } from './errors';

/**
 * A request for one generation as every route hands it to the core, in the public API's field names:
 * any parameter may be absent (or null) and then takes its default (GENERATION_PARAMS says which).
 */
export type GenerationRequest = { engine: EngineId; prompt: string } & { [K in keyof GenerationParams]?: GenerationParams[K] | null } & {
  /** Base64 data URIs of PNG, JPEG or WebP images. */
  references?: string[] | null;
  webhook_url?: string | null;
};

/** One prompt and one set of settings for several engines (default: every engine). */
export interface SandboxRunRequest {
  prompt: string;
  engines?: EngineId[] | null;
  seed?: number | null;
  steps?: number | null;
  guidance?: number | null;
  width?: number | null;
  height?: number | null;
}

/** prompts × engines × seeds, each item a generation with the shared settings. */
export interface BatchRequest {
  prompts: string[];
  engines: EngineId[];
  seeds?: number[] | null;
  steps?: number | null;
  guidance?: number | null;
  width?: number | null;
  height?: number | null;
  negative_prompt?: string | null;
  webhook_url?: string | null;
}

export const MAX_BATCH_ITEMS = 1000;

/** The parameters of one generation once every default is applied, with its engine: what is recorded and queued. */
export type ResolvedParams = Pick<GenerateJobPayload, 'engine' | 'params'>;

export const newGenerationId = () => `gen_${randomUUID().replace(/-/g, '')}`;
export const newSandboxRunId = () => `sbx_${randomUUID().replace(/-/g, '')}`;
export const newBatchId = () => `bat_${randomUUID().replace(/-/g, '')}`;
export const randomSeed = () => randomInt(SEED_RANGE.min, SEED_RANGE.max + 1);

/** Applies the engine's defaults and checks the result against its limits; the problems name the request's fields. */
export function resolveParams(req: Omit<GenerationRequest, 'references' | 'webhook_url'>, referenceCount = 0): { params: ResolvedParams; problems: FieldError[] } {
  const spec = engineSpec(req.engine);
  const given = req as Record<string, unknown>;
  const params = Object.fromEntries(
    GENERATION_PARAM_NAMES.map((name) => {
      const source = GENERATION_PARAMS[name].default;
      const fallback = source === 'engine' ? spec.defaults[name as keyof typeof spec.defaults] : source === 'random' ? randomSeed() : source === 'required' ? undefined : source;
      return [name, given[name] ?? fallback];
    }),
  ) as unknown as GenerationParams;
  const problems = engineParamErrors(spec, { ...params, referenceCount });
  if (!Number.isInteger(params.seed) || params.seed < SEED_RANGE.min || params.seed > SEED_RANGE.max)
    problems.push({ field: 'seed', message: `seed must be an integer between ${SEED_RANGE.min} and ${SEED_RANGE.max}` });
  return { params: { engine: req.engine, params }, problems };
}

/** resolveParams, refusing the request with a 400 at the first problem. */
export function resolveOrRefuse(req: Omit<GenerationRequest, 'references' | 'webhook_url'>, referenceCount = 0): ResolvedParams {
  const { params, problems } = resolveParams(req, referenceCount);
  // The pixel budget compares two fields, which the API's JSON Schema cannot state: a 422, as at the route.
  if (problems.length) throw problems.every((p) => p.rule === 'pixel_budget') ? unprocessable(problems) : badRequest(problems);
  return params;
}

/** Each engine of a sandbox run with its parameters, or the reason its limits refuse the shared settings. */
export function sandboxPlan(req: SandboxRunRequest, seed: number) {
  const runnable: ResolvedParams[] = [];
  const skipped: Array<{ engine: EngineId; error: { code: 'bad_input'; message: string; field: string } }> = [];
  // Text no engine can take is the request's fault (400), not one engine's to skip.
  const promptProblem = textProblem('prompt', req.prompt) ?? (req.prompt.trim() === '' ? { field: 'prompt', message: 'prompt must not be empty' } : null);
  if (promptProblem) throw badRequest([promptProblem]);
  for (const engine of req.engines ?? ENGINE_IDS) {
    const { params, problems } = resolveParams({ ...req, engine, seed });
    if (problems.length) skipped.push({ engine, error: { code: 'bad_input', message: problems[0].message, field: problems[0].field } });
    else runnable.push(params);
  }
  return { engines: [...(req.engines ?? ENGINE_IDS)], runnable, skipped };
}

/**
 * Every item of a batch with its parameters; the whole batch is refused if any item is. Text that
 * no engine can take is a 400 (the document states those rules); more items than allowed, or
 * settings one of the named engines refuses, a 422 (JSON Schema cannot say either of a list of engines).
 */
export function batchPlan(req: BatchRequest): ResolvedParams[] {
  const textProblems = [
    ...req.prompts.map((prompt, i) => textProblem(`prompts[${i}]`, prompt) ?? (prompt.trim() === '' ? { field: `prompts[${i}]`, message: `prompts[${i}] must not be empty` } : null)),
    req.negative_prompt == null ? null : textProblem('negative_prompt', req.negative_prompt),
  ].filter((p): p is FieldError => p !== null);
  if (textProblems.length) throw badRequest(textProblems);
  const seeds = req.seeds?.length ? req.seeds : [randomSeed()];
  const count = req.prompts.length * req.engines.length * seeds.length;
  if (count > MAX_BATCH_ITEMS) {
    throw unprocessable([{ field: 'prompts', message: `prompts × engines × seeds must be at most ${MAX_BATCH_ITEMS} items (got ${count})` }]);
  }
  const items: ResolvedParams[] = [];
  for (const [i, prompt] of req.prompts.entries()) {
    for (const engine of req.engines) {
      for (const seed of seeds) {
        const { params, problems } = resolveParams({ ...req, engine, prompt, seed });
        // Problems name the batch's own fields: prompts[i] rather than prompt.
        if (problems.length) throw unprocessable(problems.map((p) => (p.field === 'prompt' ? { field: `prompts[${i}]`, message: p.message.replace(/^prompt/, `prompts[${i}]`) } : p)));
        items.push(params);
      }
    }
  }
  return items;
}
