import { SEED_RANGE } from '@flexy/contracts';
import { ENGINE_IDS, type EngineId } from '@flexy/engines';
import { REFERENCE_DATA_URI_PATTERN } from '@flexy/generations';
import { WEBHOOK_URL_MAX_LENGTH, WEBHOOK_URL_PATTERN } from '@flexy/webhooks';
import { ArrayMaxSize, IsArray, IsIn, IsInt, IsNotEmpty, IsNumber, IsString, Matches, Max, MaxLength, Min } from 'class-validator';
import { OptionalNotNull } from '../common/validation';
import { IsWebhookTarget } from '../common/webhook-url.validator';
import { WithinEngineLimits, WithinPixelBudget } from './engine-limits.validator';

/**
 * Body of POST /v1/generations. Absent settings take the engine's defaults from the catalog; an
 * explicit null is refused. Its OpenAPI schema (one variant per engine, with that engine's limits)
 * is generated from the catalog in openapi/request-bodies.ts; a test holds the two together.
 * Breaking a rule the schema states is a 400; a size over the engine's pixel budget (a rule across
 * two fields, stated in words only) a 422.
 */
export class CreateGenerationDto {
  @IsString()
  @IsNotEmpty({ message: 'prompt must not be empty' })
  @WithinEngineLimits('prompt')
  prompt!: string;

  @IsIn(ENGINE_IDS, { message: `engine must be one of: ${ENGINE_IDS.join(', ')}` })
  engine!: EngineId;

  @OptionalNotNull()
  @IsInt()
  @Min(SEED_RANGE.min)
  @Max(SEED_RANGE.max)
  seed?: number;

  @OptionalNotNull()
  @IsInt()
  @WithinEngineLimits('steps')
  steps?: number;

  @OptionalNotNull()
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @WithinEngineLimits('guidance')
  guidance?: number;

  @OptionalNotNull()
  @IsInt()
  @WithinEngineLimits('width')
  @WithinPixelBudget()
  width?: number;

  @OptionalNotNull()
  @IsInt()
  @WithinEngineLimits('height')
  height?: number;

  @OptionalNotNull()
  @IsString()
  @WithinEngineLimits('negative_prompt')
  negative_prompt?: string;

  @OptionalNotNull()
  @IsInt()
  @WithinEngineLimits('num_images')
  num_images?: number;

  @OptionalNotNull()
  @IsString()
  @MaxLength(WEBHOOK_URL_MAX_LENGTH)
  @Matches(new RegExp(WEBHOOK_URL_PATTERN), { message: 'webhook_url must be an http(s) URL without credentials' })
  @IsWebhookTarget()
  webhook_url?: string;

  @OptionalNotNull()
  @IsArray()
  @ArrayMaxSize(10)
  @IsString({ each: true })
  @Matches(new RegExp(REFERENCE_DATA_URI_PATTERN), { each: true, message: 'references must be base64 data URIs of PNG, JPEG or WebP images (URLs are not fetched)' })
  @WithinEngineLimits('references')
  references?: string[];
}
