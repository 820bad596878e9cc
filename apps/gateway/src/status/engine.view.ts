import { ApiProperty } from '@nestjs/swagger';
import { ENGINE_IDS } from '@flexy/engines';

export const SNAPSHOT_STATES = ['missing', 'partial', 'verified', 'altered', 'demo', 'random'] as const;

class RangeView {
  @ApiProperty({ type: 'number' }) min!: number;
  @ApiProperty({ type: 'number' }) max!: number;
}

export class EngineDefaultsView {
  @ApiProperty({ type: 'integer' }) steps!: number;
  @ApiProperty({ type: 'number' }) guidance!: number;
  @ApiProperty({ type: 'integer' }) width!: number;
  @ApiProperty({ type: 'integer' }) height!: number;
}

/** The catalog's limits of an engine, as the catalog names them. */
export class EngineLimitsView {
  @ApiProperty({ type: 'integer' }) sizeMultiple!: number;
  @ApiProperty({ type: 'integer' }) minSide!: number;
  @ApiProperty({ type: 'integer' }) maxSide!: number;
  @ApiProperty({ type: 'integer' }) maxPixels!: number;
  @ApiProperty({ type: () => RangeView }) steps!: RangeView;
  @ApiProperty({ type: () => RangeView }) guidance!: RangeView;
  @ApiProperty({ type: 'integer' }) maxPromptChars!: number;
  @ApiProperty() negativePrompt!: boolean;
  @ApiProperty({ type: 'integer' }) maxReferences!: number;
  @ApiProperty({ type: 'integer' }) maxImages!: number;
}

export class EngineWeightsView {
  @ApiProperty({ enum: SNAPSHOT_STATES }) state!: string;
  @ApiProperty({ type: String, nullable: true }) detail!: string | null;
  @ApiProperty({ type: String, nullable: true, description: 'The command that makes the engine available, when it is not.' }) fix!: string | null;
}

export class EngineUnavailableOnView {
  @ApiProperty() worker!: string;
  @ApiProperty({ type: String, nullable: true, description: 'The file, load or canary that failed.' }) reason!: string | null;
  @ApiProperty({ type: 'integer', nullable: true, description: 'When that worker tries it again (ms since the epoch).' }) retry_at!: number | null;
}

/** An engine's health across the workers that report it: one engine's bad files make it unavailable, not the worker. */
export class EngineHealthView {
  @ApiProperty({ enum: ['available', 'unavailable', 'unknown'], description: '`available` on at least one worker; `unavailable` on every worker that has it; `unknown` when no worker reports it.' })
  state!: string;
  @ApiProperty({ type: [String] }) available_on!: string[];
  @ApiProperty({ type: () => [EngineUnavailableOnView] }) unavailable_on!: EngineUnavailableOnView[];
}

export class EngineView {
  @ApiProperty({ enum: ENGINE_IDS }) id!: string;
  @ApiProperty() label!: string;
  @ApiProperty({ description: 'The diffusers pipeline class.' }) pipeline!: string;
  @ApiProperty() hub_repo!: string;
  @ApiProperty() revision!: string;
  @ApiProperty() license!: string;
  @ApiProperty({ type: () => EngineDefaultsView }) defaults!: EngineDefaultsView;
  @ApiProperty({ type: () => EngineLimitsView }) limits!: EngineLimitsView;
  @ApiProperty() available!: boolean;
  @ApiProperty({ type: () => EngineWeightsView }) weights!: EngineWeightsView;
  @ApiProperty({ type: [String], description: 'Workers that serve it.' }) workers!: string[];
  @ApiProperty({ type: () => EngineHealthView }) health!: EngineHealthView;
  @ApiProperty({ type: [String], description: 'Workers that hold it on the device now.' }) resident_on!: string[];
  @ApiProperty({ type: 'integer' }) queue_depth!: number;
  @ApiProperty({ type: 'number', nullable: true, description: 'Median seconds per denoising step over recent generations.' }) typical_s_per_step!: number | null;
}

export class EngineListView {
  @ApiProperty({ type: () => [EngineView] }) engines!: EngineView[];
}
