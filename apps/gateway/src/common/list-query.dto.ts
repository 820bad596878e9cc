import { ApiPropertyOptional } from '@nestjs/swagger';
import { InvalidCursorError } from '@flexy/persistence';
import { unprocessable } from '@flexy/generations';
import { GENERATION_STATUSES, type GenerationStatusName } from '@flexy/contracts';
import { ENGINE_IDS, type EngineId } from '@flexy/engines';
import { Type } from 'class-transformer';
import { IsIn, IsInt, IsOptional, IsString, Max, MaxLength, Min, registerDecorator } from 'class-validator';

export const MAX_LIST_LIMIT = 100;

/** RFC 3339 date-time, JSON Schema's `date-time`: a calendar date and time of day, with a zone. */
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$/;

/** The instant an RFC 3339 date-time names, or null when it is not one (a leap second reads as :59). */
export function parseDateTime(text: string): Date | null {
  const m = DATE_TIME.exec(text);
  if (!m) return null;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 60) return null;
  if (m[9] !== undefined && (Number(m[9]) > 23 || Number(m[10]) > 59)) return null;
  const normal = text.toUpperCase().replace(/:60(?=[.Z+-])/, ':59');
  const at = new Date(normal);
  return Number.isNaN(at.getTime()) ? null : at;
}

function IsDateTime() {
  return (object: object, propertyName: string) =>
    registerDecorator({
      name: 'isDateTime',
      target: object.constructor,
      propertyName,
      options: { message: '$property must be an RFC 3339 date-time, e.g. 2026-12-04T09:00:00Z' },
      validator: { validate: (value: unknown) => typeof value === 'string' && parseDateTime(value) !== null },
    });
}

/** Paging and time filters shared by every list of one's own work. */
export class PageQueryDto {
  @ApiPropertyOptional({ description: '`next_cursor` of the previous page.', maxLength: 200 })
  @IsOptional()
  @IsString()
  @MaxLength(200)
  cursor?: string;

  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: MAX_LIST_LIMIT, default: 20 })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(MAX_LIST_LIMIT)
  limit?: number;

  @ApiPropertyOptional({ description: 'Only those created before this time (ISO 8601).', format: 'date-time' })
  @IsOptional()
  @IsDateTime()
  created_before?: string;

  @ApiPropertyOptional({ description: 'Only those created after this time (ISO 8601).', format: 'date-time' })
  @IsOptional()
  @IsDateTime()
  created_after?: string;
}

/** The page of a batch's items: items after this generation id. */
export class BatchItemsQueryDto {
  @ApiPropertyOptional({ description: '`next_cursor` of the previous page of items.', maxLength: 200 })
  @IsOptional()
  @IsString()
  @MaxLength(200)
  cursor?: string;
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
    createdBefore: q.created_before ? parseDateTime(q.created_before)! : undefined,
    createdAfter: q.created_after ? parseDateTime(q.created_after)! : undefined,
  };
}

/** A cursor that is not one of this list's is the client's mistake: a string, as documented, that cannot be used (422 naming the field). */
export function rethrowCursor(err: unknown): never {
  if (err instanceof InvalidCursorError) throw unprocessable([{ field: 'cursor', message: 'cursor is not a cursor of this list' }]);
  throw err;
}
