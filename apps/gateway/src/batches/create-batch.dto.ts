import { SEED_RANGE } from '@flexy/contracts';
import { catalogBounds, ENGINE_IDS, type EngineId } from '@flexy/engines';
import { MAX_BATCH_ITEMS } from '@flexy/generations';
import { WEBHOOK_URL_MAX_LENGTH, WEBHOOK_URL_PATTERN } from '@flexy/webhooks';
import { ArrayMaxSize, ArrayMinSize, ArrayUnique, IsArray, IsIn, IsInt, IsNotEmpty, IsNumber, IsString, Matches, Max, MaxLength, Min } from 'class-validator';
import { OptionalNotNull } from '../common/validation';
import { IsWebhookTarget } from '../common/webhook-url.validator';
import { IsMultipleOf } from '../generations/engine-limits.validator';

const bounds = catalogBounds();

/**
 * prompts × engines × seeds, each item a generation with the shared settings. Values outside every
 * engine's limits are a 400 here; settings one of the named engines refuses, a 422 (batchPlan).
 */
export class CreateBatchDto {
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_BATCH_ITEMS)
  @IsString({ each: true })
  @IsNotEmpty({ each: true, message: 'prompts must not contain empty prompts' })
  @MaxLength(bounds.maxPromptChars, { each: true })
  prompts!: string[];

  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(ENGINE_IDS.length)
  @ArrayUnique()
  @IsIn(ENGINE_IDS, { each: true, message: `engines must contain only: ${ENGINE_IDS.join(', ')}` })
  engines!: EngineId[];

  @OptionalNotNull()
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_BATCH_ITEMS)
  @IsInt({ each: true })
  @Min(SEED_RANGE.min, { each: true })
  @Max(SEED_RANGE.max, { each: true })
  seeds?: number[];

  @OptionalNotNull() @IsInt() @Min(bounds.steps.min) @Max(bounds.steps.max) steps?: number;
  @OptionalNotNull() @IsNumber({ allowNaN: false, allowInfinity: false }) @Min(bounds.guidance.min) @Max(bounds.guidance.max) guidance?: number;
  @OptionalNotNull() @IsInt() @Min(bounds.side.min) @Max(bounds.side.max) @IsMultipleOf(bounds.sizeMultiple) width?: number;
  @OptionalNotNull() @IsInt() @Min(bounds.side.min) @Max(bounds.side.max) @IsMultipleOf(bounds.sizeMultiple) height?: number;
  @OptionalNotNull() @IsString() @MaxLength(bounds.maxPromptChars) negative_prompt?: string;

  @OptionalNotNull()
  @IsString()
  @MaxLength(WEBHOOK_URL_MAX_LENGTH)
  @Matches(new RegExp(WEBHOOK_URL_PATTERN), { message: 'webhook_url must be an http(s) URL without credentials' })
  @IsWebhookTarget()
  webhook_url?: string;
}
