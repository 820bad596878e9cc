import { PickType } from '@nestjs/swagger';
import { SEED_RANGE } from '@flexy/contracts';
import { catalogBounds, ENGINE_IDS, type EngineId } from '@flexy/engines';
import { ArrayMaxSize, ArrayMinSize, ArrayUnique, IsArray, IsIn, IsInt, IsNotEmpty, IsNumber, IsString, Max, MaxLength, Min } from 'class-validator';
import { OptionalNotNull } from '../common/validation';
import { CreateGenerationDto } from '../generations/create-generation.dto';
import { IsMultipleOf } from '../generations/engine-limits.validator';

const bounds = catalogBounds();

/** POST /generate as the PromptPics app sends it: the engine is optional and defaults to flux1_dev. */
export class PromptPicsGenerateDto extends PickType(CreateGenerationDto, ['prompt', 'seed', 'steps', 'guidance', 'width', 'height'] as const) {
  @OptionalNotNull()
  @IsIn(ENGINE_IDS, { message: `engine must be one of: ${ENGINE_IDS.join(', ')}` })
  engine?: EngineId;
}

/**
 * POST /nerd-sandbox and /v1/sandbox-runs: one prompt and one set of settings for several engines.
 * Values outside every engine's limits are refused here (400); each engine then checks the values
 * against its own limits and answers for itself (a skipped engine says why).
 */
export class NerdSandboxDto {
  @IsString()
  @IsNotEmpty({ message: 'prompt must not be empty' })
  @MaxLength(bounds.maxPromptChars)
  prompt!: string;

  @OptionalNotNull()
  @IsInt()
  @Min(SEED_RANGE.min)
  @Max(SEED_RANGE.max)
  seed?: number;

  @OptionalNotNull() @IsInt() @Min(bounds.steps.min) @Max(bounds.steps.max) steps?: number;
  @OptionalNotNull() @IsNumber({ allowNaN: false, allowInfinity: false }) @Min(bounds.guidance.min) @Max(bounds.guidance.max) guidance?: number;
  @OptionalNotNull() @IsInt() @Min(bounds.side.min) @Max(bounds.side.max) @IsMultipleOf(bounds.sizeMultiple) width?: number;
  @OptionalNotNull() @IsInt() @Min(bounds.side.min) @Max(bounds.side.max) @IsMultipleOf(bounds.sizeMultiple) height?: number;

  @OptionalNotNull()
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(ENGINE_IDS.length)
  @ArrayUnique()
  @IsIn(ENGINE_IDS, { each: true, message: `engines must contain only: ${ENGINE_IDS.join(', ')}` })
  engines?: EngineId[];
}
