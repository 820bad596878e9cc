import { ApiProperty } from '@nestjs/swagger';
import { GENERATION_STATUSES } from '@flexy/contracts';
import { ENGINE_IDS } from '@flexy/engines';
import { GenerationFailureView } from '../common/api-responses';
import { TimingsView } from '../generations/generation.view';
import { RUN_STATUS_NAMES } from '../sandbox/sandbox.view';

export class BatchSummaryView {
  @ApiProperty({ example: 'bat_0123456789abcdef0123456789abcdef' }) id!: string;
  @ApiProperty({ enum: RUN_STATUS_NAMES }) status!: string;
  @ApiProperty({ type: 'integer' }) item_count!: number;
  @ApiProperty({ type: String, format: 'date-time' }) created_at!: Date;
  @ApiProperty({ type: String, format: 'date-time', nullable: true }) finished_at!: Date | null;
  @ApiProperty({ type: String, format: 'date-time', nullable: true }) cancelled_at!: Date | null;
}

export class StatusCountsView {
  @ApiProperty({ type: 'integer' }) queued!: number;
  @ApiProperty({ type: 'integer' }) running!: number;
  @ApiProperty({ type: 'integer' }) succeeded!: number;
  @ApiProperty({ type: 'integer' }) failed!: number;
  @ApiProperty({ type: 'integer' }) cancelled!: number;
}

export class BatchItemView {
  @ApiProperty({ description: 'The item’s generation id.' }) id!: string;
  @ApiProperty({ enum: ENGINE_IDS }) engine!: string;
  @ApiProperty() prompt!: string;
  @ApiProperty({ type: 'integer' }) seed!: number;
  @ApiProperty({ enum: GENERATION_STATUSES }) status!: string;
  @ApiProperty({ type: String, nullable: true }) image_url!: string | null;
  @ApiProperty({ type: () => GenerationFailureView, nullable: true }) error!: GenerationFailureView | null;
  @ApiProperty({ type: () => TimingsView, nullable: true }) timings!: TimingsView | null;
}

export class BatchView extends BatchSummaryView {
  @ApiProperty({ type: () => StatusCountsView }) counts!: StatusCountsView;
  @ApiProperty({ type: () => [BatchItemView], description: 'One page of items, in id order.' }) items!: BatchItemView[];
  @ApiProperty({ type: String, nullable: true, description: 'Pass as `cursor` for the next page of items.' }) next_cursor!: string | null;
}

export class BatchPageView {
  @ApiProperty({ type: () => [BatchSummaryView] }) items!: BatchSummaryView[];
  @ApiProperty({ type: String, nullable: true }) next_cursor!: string | null;
}

export class BatchCancelView {
  @ApiProperty() id!: string;
  @ApiProperty({ enum: ['cancelled'] }) status!: 'cancelled';
  @ApiProperty({ type: 'integer', description: 'Items removed from the queue.' }) cancelled!: number;
  @ApiProperty({ type: 'integer', description: 'Running items that stop within one step.' }) cancelling!: number;
  @ApiProperty({ type: 'integer', description: 'Items that had already finished (they keep their results).' }) already_finished!: number;
}
