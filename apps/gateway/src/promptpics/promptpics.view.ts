import { ApiProperty } from '@nestjs/swagger';
import { ENGINE_IDS } from '@flexy/engines';
import { TimingsView, WEIGHTS_KINDS } from '../generations/generation.view';

/** What POST /generate answers: the image inline, with how it was made. */
export class PromptPicsImageView {
  @ApiProperty() id!: string;
  @ApiProperty({ enum: ['succeeded'] }) status!: 'succeeded';
  @ApiProperty({ enum: ENGINE_IDS }) engine!: string;
  @ApiProperty({ type: 'integer' }) seed!: number;
  @ApiProperty({ format: 'byte', description: 'The image as base64 PNG.' }) image!: string;
  @ApiProperty({ type: String, nullable: true }) image_url!: string | null;
  @ApiProperty({ type: 'integer' }) width!: number;
  @ApiProperty({ type: 'integer' }) height!: number;
  @ApiProperty({ type: 'integer', nullable: true }) latency_ms!: number | null;
  @ApiProperty({ type: () => TimingsView, nullable: true }) timings!: TimingsView | null;
  @ApiProperty({ enum: WEIGHTS_KINDS, nullable: true }) weights!: string | null;
}
