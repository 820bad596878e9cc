import { ApiPropertyOptional, PickType } from '@nestjs/swagger';
import { ENGINE_IDS, type EngineId } from '@flexy/engines';
import { ArrayMaxSize, ArrayMinSize, ArrayUnique, IsArray, IsIn, IsInt, IsNotEmpty, IsNumber, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { CreateGenerationDto } from '../generations/create-generation.dto';

/** POST /generate as the PromptPics app sends it: the engine is optional and defaults to flux1_dev. */
export class PromptPicsGenerateDto extends PickType(CreateGenerationDto, ['prompt', 'seed', 'steps', 'guidance', 'width', 'height'] as const) {
  @ApiPropertyOptional({ enum: ENGINE_IDS, default: 'flux1_dev' })
  @IsOptional()
  @IsIn(ENGINE_IDS, { message: `engine must be one of: ${ENGINE_IDS.join(', ')}` })
  engine: EngineId = 'flux1_dev';
}

/**
 * POST /nerd-sandbox: one prompt and one set of settings for several engines. Only the types are
 * checked here; each engine checks the values against its own limits and answers for itself.
 */
export class NerdSandboxDto {
  @ApiPropertyOptional({ description: 'What to draw.' })
  @IsString()
  @IsNotEmpty({ message: 'prompt must not be empty' })
  @MaxLength(4000)
  prompt!: string;

  @ApiPropertyOptional({ minimum: 0, maximum: 0xffffffff })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(0xffffffff)
  seed?: number;

  @ApiPropertyOptional() @IsOptional() @IsInt() steps?: number;
  @ApiPropertyOptional() @IsOptional() @IsNumber({ allowNaN: false, allowInfinity: false }) guidance?: number;
  @ApiPropertyOptional() @IsOptional() @IsInt() width?: number;
  @ApiPropertyOptional() @IsOptional() @IsInt() height?: number;

  @ApiPropertyOptional({ enum: ENGINE_IDS, isArray: true, description: 'Default: every engine.' })
  @IsOptional()
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(ENGINE_IDS.length)
  @ArrayUnique()
  @IsIn(ENGINE_IDS, { each: true, message: `engines must contain only: ${ENGINE_IDS.join(', ')}` })
  engines?: EngineId[];
}
