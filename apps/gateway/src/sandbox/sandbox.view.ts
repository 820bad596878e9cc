import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { GENERATION_STATUSES } from '@flexy/contracts';
import { ENGINE_IDS } from '@flexy/engines';
import { GenerationFailureView } from '../common/api-responses';
import { TimingsView, WEIGHTS_KINDS } from '../generations/generation.view';

export const RUN_STATUS_NAMES = ['queued', 'running', 'completed', 'cancelled'] as const;

/** A run's own fields, as lists and reads show them. */
export class SandboxRunSummaryView {
  @ApiProperty({ example: 'sbx_0123456789abcdef0123456789abcdef' }) id!: string;
  @ApiProperty({ enum: RUN_STATUS_NAMES }) status!: string;
  @ApiProperty() prompt!: string;
  @ApiProperty({ type: 'integer' }) seed!: number;
  @ApiProperty({ enum: ENGINE_IDS, isArray: true }) engines!: string[];
  @ApiProperty({ type: String, format: 'date-time' }) created_at!: Date;
  @ApiProperty({ type: String, format: 'date-time', nullable: true }) finished_at!: Date | null;
}

/** One engine's part of a sandbox run. */
export class SandboxResultView {
  @ApiProperty({ enum: ENGINE_IDS }) engine!: string;
  @ApiPropertyOptional({ description: 'Absent for a skipped engine.' }) generation_id?: string;
  @ApiProperty({ enum: [...GENERATION_STATUSES, 'skipped'], description: '`skipped`: the engine’s limits refuse the shared settings (`error` says which).' }) status!: string;
  @ApiProperty({ type: 'integer', nullable: true }) latency_ms!: number | null;
  @ApiPropertyOptional({ type: String, nullable: true, format: 'byte', description: 'POST /nerd-sandbox only: the image as base64 PNG.' }) image?: string | null;
  @ApiProperty({ type: String, nullable: true }) image_url!: string | null;
  @ApiProperty({ type: () => TimingsView, nullable: true }) timings!: TimingsView | null;
  @ApiPropertyOptional({ enum: WEIGHTS_KINDS, nullable: true }) weights?: string | null;
  @ApiProperty({ type: () => GenerationFailureView, nullable: true }) error!: GenerationFailureView | null;
}

export class SandboxRunView extends SandboxRunSummaryView {
  @ApiProperty({ type: () => [SandboxResultView], description: 'One per engine, in the order asked; partial while the run goes on.' })
  results!: SandboxResultView[];
}

export class SandboxRunPageView {
  @ApiProperty({ type: () => [SandboxRunSummaryView] }) items!: SandboxRunSummaryView[];
  @ApiProperty({ type: String, nullable: true }) next_cursor!: string | null;
}
