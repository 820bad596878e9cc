import { ApiProperty } from '@nestjs/swagger';

export class LivenessView {
  @ApiProperty({ enum: ['ok'] }) status!: 'ok';
}

export class ReadinessChecksView {
  @ApiProperty() redis!: boolean;
  @ApiProperty() database!: boolean;
  @ApiProperty({ description: 'At least one worker is ready or busy.' }) workers!: boolean;
}

export class WorkerHealthView {
  @ApiProperty({ description: 'host/device' }) id!: string;
  @ApiProperty({ enum: ['starting', 'canary', 'ready', 'busy', 'restarting', 'unhealthy', 'stopping'] }) state!: string;
  @ApiProperty({ type: 'integer' }) restarts!: number;
  @ApiProperty({ type: String, nullable: true }) last_error!: string | null;
}

export class ReadinessView {
  @ApiProperty({ enum: ['ready', 'not_ready'] }) status!: string;
  @ApiProperty({ type: () => ReadinessChecksView }) checks!: ReadinessChecksView;
  @ApiProperty({ type: () => [WorkerHealthView] }) workers!: WorkerHealthView[];
}
