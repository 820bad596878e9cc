/**
 * The engine catalog: the one place that says which models the service serves and what each accepts.
 * The API's validation, the download CLI, the dashboard and the Python worker (through the generated
 * `engine-catalog.json`) all read this table.
 */

export const ENGINE_IDS = ['flux2_dev_4bit', 'flux1_dev', 'sd3_medium', 'realvis_xl'] as const;
export type EngineId = (typeof ENGINE_IDS)[number];

export interface Range {
  min: number;
  max: number;
}

export interface EngineDefaults {
  steps: number;
  guidance: number;
  width: number;
  height: number;
}

export interface EngineLimits {
  /** width and height must be multiples of this (the VAE factor times the patch size). */
  sizeMultiple: number;
  minSide: number;
  maxSide: number;
  maxPixels: number;
  steps: Range;
  guidance: Range;
  maxPromptChars: number;
  /** Whether the pipeline uses a negative prompt (true classifier-free guidance). */
  negativePrompt: boolean;
  /** Reference images the pipeline conditions on (0: text-to-image only). */
  maxReferences: number;
  maxImages: number;
}

export type TextEncoderMode = 'local' | 'remote' | 'auto';

export interface EngineSpec {
  id: EngineId;
  label: string;
  /** The hub repository the weights come from, and the commit they are pinned to. */
  hubRepo: string;
  revision: string;
  /** diffusers pipeline class; the worker resolves it by name. */
  pipelineClass: string;
  /** Folder under MODELS_DIR that holds the snapshot. */
  localDir: string;
  /** Files of the hub repo the pipeline needs (download allow-list, glob syntax). */
  allowPatterns: string[];
  gated: boolean;
  license: string;
  /** Rough resident size on the GPU in GB at bf16/NF4, for budgeting before first load. */
  memoryEstimateGb: number;
  defaults: EngineDefaults;
  limits: EngineLimits;
  /**
   * Generous time bounds for one job, so the supervisor can tell a hang from slow work: a first
   * load or swap, plus a per-step cost per megapixel (about 3× a consumer card's real cost).
   */
  timeBudget: { loadS: number; stepPerMegapixelS: number };
  /** Text encoder placement, for engines whose encoder may run elsewhere (FLUX.2). */
  textEncoder?: { modes: TextEncoderMode[]; default: TextEncoderMode; remoteUrl: string };
}

const DIFFUSERS_FILES = ['model_index.json', '*/config.json', '*/*.safetensors', '*/*.safetensors.index.json'];
const TOKENIZER_FILES = ['tokenizer*/*', 'scheduler/*'];

export const ENGINE_CATALOG: Readonly<Record<EngineId, EngineSpec>> = {
  flux2_dev_4bit: {
    id: 'flux2_dev_4bit',
    label: 'FLUX.2 [dev] 4-bit',
    hubRepo: 'diffusers/FLUX.2-dev-bnb-4bit',
    revision: 'c30ad107542e63f222f864a8de510204394fb18a',
    pipelineClass: 'Flux2Pipeline',
    localDir: 'flux2_dev_4bit',
    allowPatterns: [...DIFFUSERS_FILES, ...TOKENIZER_FILES, 'processor/*', '*/generation_config.json'],
    gated: true,
    license:
      'FLUX.2 [dev] Non-Commercial License: free for research and personal use; commercial use needs a licence from Black Forest Labs.',
    memoryEstimateGb: 20,
    timeBudget: { loadS: 600, stepPerMegapixelS: 6 },
    defaults: { steps: 28, guidance: 4.0, width: 1024, height: 1024 },
    limits: {
      sizeMultiple: 16,
      minSide: 64,
      maxSide: 4096,
      maxPixels: 4_194_304,
      steps: { min: 1, max: 100 },
      guidance: { min: 0, max: 10 },
      maxPromptChars: 4000,
      negativePrompt: false,
      maxReferences: 10,
      maxImages: 4,
    },
    textEncoder: {
      modes: ['local', 'remote', 'auto'],
      default: 'auto',
      remoteUrl: 'https://remote-text-encoder-flux-2.huggingface.co/predict',
    },
  },
  flux1_dev: {
    id: 'flux1_dev',
    label: 'FLUX.1 [dev]',
    hubRepo: 'black-forest-labs/FLUX.1-dev',
    revision: '3de623fc3c33e44ffbe2bad470d0f45bccf2eb21',
    pipelineClass: 'FluxPipeline',
    localDir: 'flux1_dev',
    allowPatterns: [...DIFFUSERS_FILES, ...TOKENIZER_FILES],
    gated: true,
    license:
      'FLUX.1 [dev] Non-Commercial License: free for research and personal use; commercial use needs a licence from Black Forest Labs.',
    memoryEstimateGb: 33,
    timeBudget: { loadS: 300, stepPerMegapixelS: 3 },
    defaults: { steps: 28, guidance: 3.5, width: 1024, height: 1024 },
    limits: {
      sizeMultiple: 16,
      minSide: 64,
      maxSide: 2048,
      maxPixels: 2_097_152,
      steps: { min: 1, max: 100 },
      guidance: { min: 0, max: 10 },
      maxPromptChars: 2000,
      negativePrompt: false,
      maxReferences: 0,
      maxImages: 4,
    },
  },
  sd3_medium: {
    id: 'sd3_medium',
    label: 'Stable Diffusion 3 Medium',
    hubRepo: 'stabilityai/stable-diffusion-3-medium-diffusers',
    revision: 'ea42f8cef0f178587cf766dc8129abd379c90671',
    pipelineClass: 'StableDiffusion3Pipeline',
    localDir: 'sd3_medium',
    allowPatterns: [...DIFFUSERS_FILES, ...TOKENIZER_FILES],
    gated: true,
    license: 'Stability AI Community License: free below USD 1M annual revenue; larger users need an enterprise licence.',
    memoryEstimateGb: 18,
    timeBudget: { loadS: 300, stepPerMegapixelS: 2 },
    defaults: { steps: 28, guidance: 7.0, width: 1024, height: 1024 },
    limits: {
      sizeMultiple: 16,
      minSide: 64,
      maxSide: 2048,
      maxPixels: 2_097_152,
      steps: { min: 1, max: 100 },
      guidance: { min: 0, max: 20 },
      maxPromptChars: 2000,
      negativePrompt: true,
      maxReferences: 0,
      maxImages: 4,
    },
  },
  realvis_xl: {
    id: 'realvis_xl',
    label: 'RealVisXL V5.0',
    hubRepo: 'SG161222/RealVisXL_V5.0',
    revision: 'main',
    pipelineClass: 'StableDiffusionXLPipeline',
    localDir: 'realvis_xl',
    allowPatterns: ['model_index.json', '*/config.json', '*/*.fp16.safetensors', ...TOKENIZER_FILES],
    gated: false,
    license: 'CreativeML Open RAIL++-M (the SDXL base licence): use-based restrictions, commercial use allowed.',
    memoryEstimateGb: 8,
    timeBudget: { loadS: 180, stepPerMegapixelS: 1.5 },
    defaults: { steps: 30, guidance: 5.0, width: 1024, height: 1024 },
    limits: {
      sizeMultiple: 8,
      minSide: 64,
      maxSide: 2048,
      maxPixels: 2_097_152,
      steps: { min: 1, max: 100 },
      guidance: { min: 0, max: 20 },
      maxPromptChars: 1000,
      negativePrompt: true,
      maxReferences: 0,
      maxImages: 4,
    },
  },
};

export function isEngineId(value: unknown): value is EngineId {
  return typeof value === 'string' && (ENGINE_IDS as readonly string[]).includes(value);
}

export function engineSpec(id: EngineId): EngineSpec {
  return ENGINE_CATALOG[id];
}

/** How long one job may take before the supervisor treats it as hung. */
export function jobDeadlineMs(spec: EngineSpec, p: { steps: number; width: number; height: number; num_images: number }): number {
  const megapixels = Math.max(0.25, (p.width * p.height) / 1_000_000);
  const { loadS, stepPerMegapixelS } = spec.timeBudget;
  return Math.round((loadS + p.steps * megapixels * p.num_images * stepPerMegapixelS) * 1000);
}
