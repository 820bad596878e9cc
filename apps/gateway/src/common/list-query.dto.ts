import { ApiPropertyOptional } from '@nestjs/swagger';
import { InvalidCursorError } from '@flexy/persistence';
import { badRequest } from '@flexy/generations';
import { GENERATION_STATUSES, type GenerationStatusName } from '@flexy/contracts';
import { ENGINE_IDS, type EngineId } from '@flexy/engines';
import { Type } from 'class-transformer';
import { IsDateString, IsIn, IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';

export const MAX_LIST_LIMIT = 100;

/** Paging and time filters shared by every list of one's own work. */
export class PageQueryDto {
  @ApiPropertyOptional({ description: '`next_cursor` of the previous page.' })
  @IsOptional()
  @IsString()
  @MaxLength(200)
  cursor?: string;

  @ApiPropertyOptional({ minimum: 1, maximum: MAX_LIST_LIMIT, default: 20 })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(MAX_LIST_LIMIT)
  limit?: number;

  @ApiPropertyOptional({ description: 'Only those created before this time (ISO 8601).', format: 'date-time' })
  @IsOptional()
  @IsDateString({ strict: true }, { message: 'created_before must be an ISO 8601 date-time' })
  created_before?: string;

  @ApiPropertyOptional({ description: 'Only those created after this time (ISO 8601).', format: 'date-time' })
  @IsOptional()
  @IsDateString({ strict: true }, { message: 'created_after must be an ISO 8601 date-time' })
  created_after?: string;
}

export class GenerationListQueryDto extends PageQueryDto {
  @ApiPropertyOptional({ enum: GENERATION_STATUSES })
  @IsOptional()
  @IsIn(GENERATION_STATUSES, { message: `status must be one of: ${GENERATION_STATUSES.join(', ')}` })
  status?: GenerationStatusName;

  @ApiPropertyOptional({ enum: ENGINE_IDS })
  @IsOptional()
  @IsIn(ENGINE_IDS, { message: `engine must be one of: ${ENGINE_IDS.join(', ')}` })
  engine?: EngineId;
}

export const RUN_STATUSES = ['running', 'completed', 'cancelled'] as const;

export class RunListQueryDto extends PageQueryDto {
  @ApiPropertyOptional({ enum: RUN_STATUSES })
  @IsOptional()
  @IsIn(RUN_STATUSES, { message: `status must be one of: ${RUN_STATUSES.join(', ')}` })
  status?: (typeof RUN_STATUSES)[number];
}

/** The repository's form of the shared filters. */
export function pageFilters(q: PageQueryDto) {
  return {
    cursor: q.cursor ?? null,
    limit: q.limit ?? 20,
    createdBefore: q.created_before ? new Date(q.created_before) : undefined,
    createdAfter: q.created_after ? new Date(q.created_after) : undefined,
  };
}

/** A cursor that is not one of this list's is the client's mistake (400 naming the field). */
export function rethrowCursor(err: unknown): never {
  if (err instanceof InvalidCursorError) throw badRequest([{ field: 'cursor', message: 'cursor is not a cursor of this list' }]);
  throw err;
}
