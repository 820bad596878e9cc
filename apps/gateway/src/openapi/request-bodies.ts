import type { SchemaObject } from '@nestjs/swagger/dist/interfaces/open-api-spec.interface';
import { SEED_RANGE } from '@flexy/contracts';
import { catalogBounds, ENGINE_CATALOG, ENGINE_IDS, PROMPT_PATTERN, TEXT_PATTERN, type EngineSpec } from '@flexy/engines';
import { MAX_BATCH_ITEMS, REFERENCE_DATA_URI_PATTERN } from '@flexy/generations';
import { WEBHOOK_URL_MAX_LENGTH, WEBHOOK_URL_PATTERN } from '@flexy/webhooks';

/**
 * The request bodies' JSON Schemas, generated from the engine catalog and the shared rules (seed
 * range, text patterns, URL form), so the document states every rule that JSON Schema can express
 * and restates no number. The class-validator DTOs enforce the same rules; the OpenAPI test and
 * the Schemathesis run hold the two together.
 *
 * Creating one generation takes one variant per engine (oneOf, told apart by `engine`) with that
 * engine's limits. The pixel budget (width × height) compares two fields, which JSON Schema cannot:
 * it is stated in words and refused with a 422. Bodies that name several engines at once (sandbox
 * runs, batches) state the loosest limits over all engines: each engine applies its own on top (a
 * sandbox run skips the engine, a batch answers 422).
 */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

const seed: SchemaObject = {
  type: 'integer',
  minimum: SEED_RANGE.min,
  maximum: SEED_RANGE.max,
  description: 'Random seed; the same seed and settings give the same pixels. Default: a random one.',
};

function prompt(maxLength: number): SchemaObject {
  return {
    type: 'string',
    minLength: 1,
    maxLength,
    pattern: PROMPT_PATTERN,
    description: 'What to draw: at least one character that is not whitespace, no NUL; length in Unicode code points.',
  };
}

const webhookUrl: SchemaObject = {
  type: 'string',
  maxLength: WEBHOOK_URL_MAX_LENGTH,
  pattern: WEBHOOK_URL_PATTERN,
  description:
    'Receives a signed POST (X-FlexyFace-Signature) when the generation ends. An http(s) URL without credentials; ' +
    'its target must be public: loopback, private, link-local and metadata addresses, also behind a host name, are refused with a 422.',
  example: 'https://example.com/hooks/flexyface',
};

const engineList: SchemaObject = {
  type: 'array',
  items: { type: 'string', enum: [...ENGINE_IDS] },
  minItems: 1,
  maxItems: ENGINE_IDS.length,
  uniqueItems: true,
};

function side(spec: EngineSpec, which: 'width' | 'height'): SchemaObject {
  const { sizeMultiple, minSide, maxSide, maxPixels } = spec.limits;
  return {
    type: 'integer',
    minimum: minSide,
    maximum: maxSide,
    multipleOf: sizeMultiple,
    default: spec.defaults[which],
    description: `Pixels. width × height must be at most ${maxPixels} (an absent side counts at its default); JSON Schema cannot compare two fields, so a larger product is refused with a 422.`,
  };
}

/** The settings one engine takes, with its limits and defaults. */
function engineSettings(spec: EngineSpec): Record<string, SchemaObject> {
  const { limits, defaults } = spec;
  return {
    steps: { type: 'integer', minimum: limits.steps.min, maximum: limits.steps.max, default: defaults.steps, description: 'Denoising steps.' },
    guidance: { type: 'number', minimum: limits.guidance.min, maximum: limits.guidance.max, default: defaults.guidance, description: 'Guidance scale.' },
    width: side(spec, 'width'),
    height: side(spec, 'height'),
  };
}

function generationVariant(spec: EngineSpec, shape: 'v1' | 'promptpics'): SchemaObject {
  const { limits } = spec;
  const properties: Record<string, SchemaObject> = {
    prompt: prompt(limits.maxPromptChars),
    engine: { type: 'string', enum: [spec.id], description: spec.label },
    seed,
    ...engineSettings(spec),
  };
  if (shape === 'v1') {
    properties.num_images = { type: 'integer', minimum: 1, maximum: limits.maxImages, default: 1, description: 'Images from consecutive latents of one seed.' };
    if (limits.negativePrompt) properties.negative_prompt = { type: 'string', maxLength: limits.maxPromptChars, pattern: TEXT_PATTERN, description: 'What to steer away from (true classifier-free guidance).' };
    properties.references =
      limits.maxReferences > 0
        ? {
            type: 'array',
            maxItems: limits.maxReferences,
            items: { type: 'string', pattern: REFERENCE_DATA_URI_PATTERN },
            description: `Images to condition on (at most ${limits.maxReferences}), as base64 data URIs of PNG, JPEG or WebP, each at least 64×64 and at most 16 MP decoded; one that does not decode is a 422. URLs are not fetched.`,
          }
        : { type: 'array', maxItems: 0, items: { type: 'string' }, description: `${spec.id} takes no reference images.` };
    properties.webhook_url = webhookUrl;
  }
  // The PromptPics call may leave the engine out, meaning its default.
  const required = shape === 'promptpics' && spec.id === 'flux1_dev' ? ['prompt'] : ['prompt', 'engine'];
  return { type: 'object', additionalProperties: false, required, properties };
}

function sandboxBody(): SchemaObject {
  const b = catalogBounds();
  return {
    type: 'object',
    additionalProperties: false,
    required: ['prompt'],
    description:
      'One prompt and one set of settings for several engines. The bounds are the loosest over all engines; an engine whose own limits refuse a setting is skipped with the reason in its result.',
    properties: {
      prompt: prompt(b.maxPromptChars),
      seed,
      steps: { type: 'integer', minimum: b.steps.min, maximum: b.steps.max, description: "Default: each engine's own." },
      guidance: { type: 'number', minimum: b.guidance.min, maximum: b.guidance.max, description: "Default: each engine's own." },
      width: { type: 'integer', minimum: b.side.min, maximum: b.side.max, multipleOf: b.sizeMultiple, description: "Default: each engine's own." },
      height: { type: 'integer', minimum: b.side.min, maximum: b.side.max, multipleOf: b.sizeMultiple, description: "Default: each engine's own." },
      engines: { ...engineList, description: 'Default: every engine.' },
    },
  };
}

function batchBody(): SchemaObject {
  const b = catalogBounds();
  return {
    type: 'object',
    additionalProperties: false,
    required: ['prompts', 'engines'],
    description:
      `prompts × engines × seeds, at most ${MAX_BATCH_ITEMS} items, each a generation with the shared settings. The bounds are the loosest over all engines; ` +
      'settings that one of the named engines refuses, or more items than allowed, are a 422 naming the field.',
    properties: {
      prompts: { type: 'array', minItems: 1, maxItems: MAX_BATCH_ITEMS, items: prompt(b.maxPromptChars) },
      engines: engineList,
      seeds: { type: 'array', minItems: 1, maxItems: MAX_BATCH_ITEMS, items: seed, description: 'Default: one random seed shared by all items.' },
      steps: { type: 'integer', minimum: b.steps.min, maximum: b.steps.max },
      guidance: { type: 'number', minimum: b.guidance.min, maximum: b.guidance.max },
      width: { type: 'integer', minimum: b.side.min, maximum: b.side.max, multipleOf: b.sizeMultiple },
      height: { type: 'integer', minimum: b.side.min, maximum: b.side.max, multipleOf: b.sizeMultiple },
      negative_prompt: { type: 'string', maxLength: b.maxPromptChars, pattern: TEXT_PATTERN, description: 'Only for engines with true classifier-free guidance.' },
      webhook_url: { ...webhookUrl, description: 'Notified for each item as it ends; public http(s) targets only, as for a generation.' },
    },
  };
}

/** Every request body schema, by component name. */
export function requestBodySchemas(): Record<string, SchemaObject> {
  const schemas: Record<string, SchemaObject> = {};
  for (const id of ENGINE_IDS) {
    schemas[`GenerationRequest_${id}`] = generationVariant(ENGINE_CATALOG[id], 'v1');
    schemas[`PromptPicsRequest_${id}`] = generationVariant(ENGINE_CATALOG[id], 'promptpics');
  }
  schemas.GenerationRequest = {
    description: 'One generation. Settings left out take the engine’s defaults; `null` is refused. One variant per engine, with that engine’s limits.',
    oneOf: ENGINE_IDS.map((id) => ref(`GenerationRequest_${id}`)),
  };
  schemas.PromptPicsRequest = {
    description: 'POST /generate as the PromptPics app sends it; `engine` defaults to flux1_dev.',
    oneOf: ENGINE_IDS.map((id) => ref(`PromptPicsRequest_${id}`)),
  };
  schemas.SandboxRunRequest = sandboxBody();
  schemas.BatchRequest = batchBody();
  return schemas;
}

export const REQUEST_BODY = {
  generation: ref('GenerationRequest'),
  promptPics: ref('PromptPicsRequest'),
  sandboxRun: ref('SandboxRunRequest'),
  batch: ref('BatchRequest'),
};
