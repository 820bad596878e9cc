import { ApiPropertyOptional } from '@nestjs/swagger';
import { ENGINE_CATALOG } from '@flexy/engines';
import { Type } from 'class-transformer';
import { IsIn, IsInt, IsOptional, Max, Min } from 'class-validator';

export const IMAGE_FORMATS = ['png', 'webp', 'jpeg'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

/** The highest image index any engine produces. */
const MAX_INDEX = Math.max(...Object.values(ENGINE_CATALOG).map((s) => s.limits.maxImages)) - 1;

export class ImageQueryDto {
  @ApiPropertyOptional({ enum: IMAGE_FORMATS, default: 'png' })
  @IsOptional()
  @IsIn(IMAGE_FORMATS, { message: `format must be one of: ${IMAGE_FORMATS.join(', ')}` })
  format?: ImageFormat;

  @ApiPropertyOptional({ type: 'integer', minimum: 0, maximum: MAX_INDEX, default: 0 })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(0)
  @Max(MAX_INDEX)
  index?: number;
}
