import { ApiExtraModels, ApiProperty, getSchemaPath } from '@nestjs/swagger';
import { EngineHealthView } from '../status/engine.view';

export class LivenessView {
  @ApiProperty({ enum: ['ok'] }) status!: 'ok';
}

export class ReadinessChecksView {
  @ApiProperty() redis!: boolean;
  @ApiProperty() database!: boolean;
  @ApiProperty({ description: 'At least one worker is ready or busy.' }) workers!: boolean;
}

export class CheckDetailView {
  @ApiProperty({ type: 'integer', description: 'How long the check took (each has its own timeout of about a second).' }) ms!: number;
  @ApiProperty({ type: String, nullable: true, description: 'Why it failed (a timeout names the part that did not answer).' }) error!: string | null;
}

export class ReadinessDetailsView {
  @ApiProperty({ type: () => CheckDetailView }) redis!: CheckDetailView;
  @ApiProperty({ type: () => CheckDetailView }) database!: CheckDetailView;
  @ApiProperty({ type: () => CheckDetailView }) workers!: CheckDetailView;
}

/** One engine's health on one worker. */
export class WorkerEngineHealthView {
  @ApiProperty() engine!: string;
  @ApiProperty({ enum: ['available', 'unavailable'] }) state!: string;
  @ApiProperty({ type: String, nullable: true, description: 'Why it is unavailable (the file, load or canary that failed).' }) reason!: string | null;
  @ApiProperty({ type: 'integer', nullable: true, description: 'When it is tried again (ms since the epoch).' }) retry_at!: number | null;
}

export class WorkerHealthView {
  @ApiProperty({ description: 'host/device' }) id!: string;
  @ApiProperty({ enum: ['starting', 'canary', 'ready', 'busy', 'restarting', 'unhealthy', 'stopping'] }) state!: string;
  @ApiProperty({ type: 'integer' }) restarts!: number;
  @ApiProperty({ type: String, nullable: true }) last_error!: string | null;
  @ApiProperty({ type: () => [WorkerEngineHealthView] }) engines!: WorkerEngineHealthView[];
}

@ApiExtraModels(EngineHealthView)
export class ReadinessView {
  @ApiProperty({ enum: ['ready', 'not_ready'] }) status!: string;
  @ApiProperty({ type: () => ReadinessChecksView }) checks!: ReadinessChecksView;
  @ApiProperty({ type: () => ReadinessDetailsView }) details!: ReadinessDetailsView;
  @ApiProperty({ type: () => [WorkerHealthView] }) workers!: WorkerHealthView[];
  @ApiProperty({
    type: 'object',
    additionalProperties: { $ref: getSchemaPath(EngineHealthView) },
    description: "Each engine's health across the workers, by engine id.",
  })
  engines!: Record<string, EngineHealthView>;
}
