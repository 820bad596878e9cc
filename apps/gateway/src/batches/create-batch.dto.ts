import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ENGINE_IDS, type EngineId } from '@flexy/engines';
import {
  ArrayMaxSize,
  ArrayMinSize,
  ArrayUnique,
  IsArray,
  IsIn,
  IsInt,
  IsNotEmpty,
  IsNumber,
  IsOptional,
  IsString,
  Max,
  MaxLength,
  Min,
} from 'class-validator';
import { IsWebhookTarget } from '../common/webhook-url.validator';

export const MAX_BATCH_ITEMS = 1000;

/** prompts × engines × seeds, each item a generation with the shared settings. */
export class CreateBatchDto {
  @ApiProperty({ type: [String], minItems: 1, maxItems: MAX_BATCH_ITEMS })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_BATCH_ITEMS)
  @IsString({ each: true })
  @IsNotEmpty({ each: true, message: 'prompts must not contain empty prompts' })
  @MaxLength(4000, { each: true })
  prompts!: string[];

  @ApiProperty({ enum: ENGINE_IDS, isArray: true })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayUnique()
  @IsIn(ENGINE_IDS, { each: true, message: `engines must contain only: ${ENGINE_IDS.join(', ')}` })
  engines!: EngineId[];

  @ApiPropertyOptional({ type: [Number], description: 'Default: one random seed shared by all items.' })
  @IsOptional()
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_BATCH_ITEMS)
  @IsInt({ each: true })
  @Min(0, { each: true })
  @Max(0xffffffff, { each: true })
  seeds?: number[];

  @ApiPropertyOptional() @IsOptional() @IsInt() steps?: number;
  @ApiPropertyOptional() @IsOptional() @IsNumber({ allowNaN: false, allowInfinity: false }) guidance?: number;
  @ApiPropertyOptional() @IsOptional() @IsInt() width?: number;
  @ApiPropertyOptional() @IsOptional() @IsInt() height?: number;
  @ApiPropertyOptional() @IsOptional() @IsString() negative_prompt?: string;

  @ApiPropertyOptional({ description: 'Notified for each item as it ends; public http(s) targets only, as for a generation.', maxLength: 2000 })
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  @IsWebhookTarget()
  webhook_url?: string;
}
