import { SetMetadata } from '@nestjs/common';
import type { JobName } from '@flexy/contracts';

export const ON_JOB = Symbol('ON_JOB');

/** Marks a provider method as the handler of one job name; QueueWorkerService finds it at start. */
export const OnJob = (name: JobName) => SetMetadata(ON_JOB, name);
