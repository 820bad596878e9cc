import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ENGINE_IDS, type EngineId } from '@flexy/engines';
import { ArrayMaxSize, IsArray, IsIn, IsInt, IsNotEmpty, IsNumber, IsOptional, IsString, Matches, Max, MaxLength, Min } from 'class-validator';
import { IsWebhookTarget } from '../common/webhook-url.validator';
import { WithinEngineLimits } from './engine-limits.validator';

const MAX_SEED = 0xffffffff;

/** Body of POST /v1/generations. Absent settings take the engine's defaults from the catalog. */
export class CreateGenerationDto {
  @ApiProperty({ description: 'What to draw.', example: 'a lighthouse at dawn, oil painting' })
  @IsString()
  @IsNotEmpty({ message: 'prompt must not be empty' })
  @WithinEngineLimits('prompt')
  prompt!: string;

  @ApiProperty({ enum: ENGINE_IDS, example: 'flux1_dev' })
  @IsIn(ENGINE_IDS, { message: `engine must be one of: ${ENGINE_IDS.join(', ')}` })
  engine!: EngineId;

  @ApiPropertyOptional({ description: 'Random seed; the same seed and settings give the same pixels.', minimum: 0, maximum: MAX_SEED })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(MAX_SEED)
  seed?: number;

  @ApiPropertyOptional({ description: 'Denoising steps (engine limits apply).', example: 28 })
  @IsOptional()
  @IsInt()
  @WithinEngineLimits('steps')
  steps?: number;

  @ApiPropertyOptional({ description: 'Guidance scale (engine limits apply).', example: 3.5 })
  @IsOptional()
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @WithinEngineLimits('guidance')
  guidance?: number;

  @ApiPropertyOptional({ description: 'Width in pixels, a multiple of the engine step.', example: 1024 })
  @IsOptional()
  @IsInt()
  @WithinEngineLimits('width')
  width?: number;

  @ApiPropertyOptional({ description: 'Height in pixels, a multiple of the engine step.', example: 1024 })
  @IsOptional()
  @IsInt()
  @WithinEngineLimits('height')
  height?: number;

  @ApiPropertyOptional({ description: 'Only for engines with true classifier-free guidance (sd3_medium, realvis_xl).' })
  @IsOptional()
  @IsString()
  @WithinEngineLimits('negative_prompt')
  negative_prompt?: string;

  @ApiPropertyOptional({ description: 'Images to generate with consecutive latents of one seed.', minimum: 1, maximum: 4, default: 1 })
  @IsOptional()
  @IsInt()
  @WithinEngineLimits('num_images')
  num_images?: number;

  @ApiPropertyOptional({
    description: 'Receives a signed POST (X-FlexyFace-Signature) when the generation ends. Public http(s) targets only: loopback, private, link-local and metadata addresses are refused, also behind a host name.',
    example: 'https://example.com/hooks/flexyface',
    maxLength: 2000,
  })
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  @IsWebhookTarget()
  webhook_url?: string;

  @ApiPropertyOptional({
    type: [String],
    maxItems: 10,
    description: 'Reference images for engines that condition on them (flux2_dev_4bit: 1–10), as base64 data URIs of PNG, JPEG or WebP. URLs are not fetched.',
  })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(10)
  @IsString({ each: true })
  @Matches(/^data:image\/(png|jpeg|webp);base64,[A-Za-z0-9+/=]+$/, { each: true, message: 'references must be base64 data URIs of PNG, JPEG or WebP images (URLs are not fetched)' })
  @WithinEngineLimits('references')
  references?: string[];
}
