/**
 * What the dashboard shows, as served by /admin/api and rendered by the pages: one set of types
 * for both, so the HTML and the JSON never disagree. Input DTOs (validated) sit at the end.
 */
import { ENGINE_IDS, type EngineId } from '@flexy/engines';
import { GENERATION_STATUSES, type WorkerLifecycleState } from '@flexy/contracts';
import { Transform } from 'class-transformer';
import { ArrayMaxSize, ArrayMinSize, IsIn, IsInt, IsNotEmpty, IsNumber, IsOptional, IsString, Matches, Max, MaxLength, Min } from 'class-validator';

export type AdminRole = 'admin' | 'readonly';

/** Who is asking: set by AdminGuard on every admin request. */
export interface AdminPrincipal {
  user: string;
  role: AdminRole;
  via: 'session' | 'key';
  /** The session's CSRF token (null for key requests, which carry no ambient credential). */
  csrfToken: string | null;
}

// ---- queues ---------------------------------------------------------------------------------

export const QUEUE_JOB_STATES = ['waiting', 'active', 'delayed', 'failed', 'completed'] as const;
export type QueueJobState = (typeof QUEUE_JOB_STATES)[number];

export interface QueueSummary {
  name: string;
  paused: boolean;
  counts: Record<QueueJobState, number>;
  /** Jobs finished in the last hour, as the queue still holds them (completed ones are kept 1 h, at most 5,000). */
  lastHour: { completed: number; failed: number; perFiveMinutes: number[] };
  oldestWaiting: { jobId: string; ageMs: number } | null;
}

export interface QueueJobRow {
  id: string;
  name: string;
  state: QueueJobState;
  engine: string | null;
  prompt: string | null;
  origin: string | null;
  priority: number;
  attemptsMade: number;
  addedAt: number;
  processedAt: number | null;
  finishedAt: number | null;
  failedReason: string | null;
  progress: { step: number; totalSteps: number } | null;
}

export interface QueueJobPage {
  queue: string;
  state: QueueJobState;
  page: number;
  pageSize: number;
  total: number;
  jobs: QueueJobRow[];
}

// ---- workers --------------------------------------------------------------------------------

export interface WorkerView {
  id: string;
  host: string;
  device: string;
  state: WorkerLifecycleState;
  pid: number | null;
  restarts: number;
  lastError: string | null;
  currentJob: { id: string; engine: string; step: number; totalSteps: number; startedAt: number; canary: boolean } | null;
  memory: { usedBytes: number; budgetBytes: number } | null;
  engines: Array<{
    engine: string;
    weights: string;
    revision: string;
    residentOn: 'device' | 'host' | null;
    bytes: number | null;
    /** Health on this worker: unavailable with its reason until `retryAt` (files, load or canary failed). */
    state: 'available' | 'unavailable';
    reason: string | null;
    retryAt: number | null;
  }>;
  updatedAt: number;
  /** No report for longer than three publishing periods: the supervisor may be gone. */
  stale: boolean;
}

// ---- jobs (generation records) --------------------------------------------------------------

export type PhaseName = 'queue_wait' | 'load' | 'text_encode' | 'denoise' | 'decode' | 'encode_store' | 'other';

export interface PhaseTiming {
  phase: PhaseName;
  ms: number;
}

export interface JobListItem {
  id: string;
  status: string;
  engine: string;
  prompt: string;
  origin: string;
  apiKey: { id: string; name: string; prefix: string } | null;
  createdAt: string;
  totalMs: number | null;
  errorCode: string | null;
}

export interface JobListPage {
  items: JobListItem[];
  /** Cursor for the next (older) page; null on the last page. */
  older: string | null;
  /** Cursor for the previous (newer) page; null on the first page. */
  newer: string | null;
}

export interface JobDetail extends JobListItem {
  negativePrompt: string | null;
  parameters: { seed: string; steps: number; guidance: number; width: number; height: number; numImages: number };
  weights: string | null;
  modelRevision: string | null;
  workerId: string | null;
  attempts: number;
  startedAt: string | null;
  finishedAt: string | null;
  phases: PhaseTiming[];
  images: Array<{ index: number; url: string; width: number; height: number }>;
  error: { code: string; message: string | null; field: string | null } | null;
  sandboxRunId: string | null;
  batchId: string | null;
  /** What the queue says about it, while it still holds the job. */
  queue: { state: string; progress: { step: number; totalSteps: number } | null; attemptsMade: number } | null;
  cancellable: boolean;
  retryable: boolean;
}

// ---- sandbox --------------------------------------------------------------------------------

export interface SandboxRunSummary {
  id: string;
  prompt: string;
  engines: string[];
  status: string;
  createdAt: string;
  finishedAt: string | null;
}

export interface SandboxEngineResult {
  engine: string;
  status: string;
  generationId: string | null;
  imageUrl: string | null;
  weights: string | null;
  totalMs: number | null;
  phases: PhaseTiming[];
  progress: { step: number; totalSteps: number } | null;
  error: { code: string; message: string | null; field: string | null } | null;
}

export interface SandboxRunDetail extends SandboxRunSummary {
  seed: number;
  results: SandboxEngineResult[];
}

export interface SandboxRunPage {
  items: SandboxRunSummary[];
  older: string | null;
}

// ---- batches --------------------------------------------------------------------------------

export interface BatchSummary {
  id: string;
  status: string;
  itemCount: number;
  counts: Record<'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled', number>;
  createdAt: string;
  finishedAt: string | null;
  cancelledAt: string | null;
}

export interface BatchDetail extends BatchSummary {
  items: JobListItem[];
}

// ---- inputs ---------------------------------------------------------------------------------

const emptyToUndefined = ({ value }: { value: unknown }) => (value === '' ? undefined : value);
/** Form fields arrive as strings; numbers are parsed here, and a field left blank means "not given". */
const toNumber = ({ value }: { value: unknown }) => (value === '' || value === undefined ? undefined : typeof value === 'string' ? Number(value) : value);
const toArray = ({ value }: { value: unknown }) => (value === undefined || value === '' ? undefined : Array.isArray(value) ? value : [value]);

/** Fields every admin form may carry: the CSRF token (also accepted as X-CSRF-Token). */
export class AdminFormDto {
  @IsOptional()
  @IsString()
  _csrf?: string;
}

/** `?live=1` streams the page's live region as Server-Sent Events; `?partial=1` returns it once. */
export class LiveQueryDto {
  @IsOptional()
  @IsIn(['1'])
  live?: string;

  @IsOptional()
  @IsIn(['1'])
  partial?: string;
}

export class LoginDto extends AdminFormDto {
  @IsString()
  @IsNotEmpty({ message: 'user must not be empty' })
  @MaxLength(100)
  user!: string;

  @IsString()
  @IsNotEmpty({ message: 'password must not be empty' })
  @MaxLength(1000)
  password!: string;

  @IsOptional()
  @IsString()
  @MaxLength(2000)
  next?: string;
}

export class LoginPageQueryDto {
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  next?: string;
}

export class QueueJobsQueryDto extends LiveQueryDto {
  @IsOptional()
  @IsIn(QUEUE_JOB_STATES)
  state?: QueueJobState;

  @IsOptional()
  @Transform(toNumber)
  @IsInt()
  @Min(1)
  @Max(100_000)
  page?: number;
}

export class CleanQueueDto extends AdminFormDto {
  @IsIn(['completed', 'failed'], { message: 'state must be completed or failed' })
  state!: 'completed' | 'failed';

  /** Only jobs that finished at least this long ago are removed. */
  @Transform(toNumber)
  @IsInt()
  @Min(0)
  @Max(60 * 24 * 30)
  olderThanMinutes!: number;
}

export const JOB_STATUSES = GENERATION_STATUSES;

export class JobSearchQueryDto extends LiveQueryDto {
  /** A generation id, or words of its prompt. */
  @IsOptional()
  @Transform(emptyToUndefined)
  @IsString()
  @MaxLength(200)
  q?: string;

  @IsOptional()
  @Transform(emptyToUndefined)
  @IsIn(ENGINE_IDS)
  engine?: EngineId;

  @IsOptional()
  @Transform(emptyToUndefined)
  @IsIn(JOB_STATUSES)
  status?: (typeof JOB_STATUSES)[number];

  /** An API key id or its visible prefix. */
  @IsOptional()
  @Transform(emptyToUndefined)
  @IsString()
  @MaxLength(100)
  api_key?: string;

  /** ISO date-time (or the browser's datetime-local value): created at or after. */
  @IsOptional()
  @Transform(emptyToUndefined)
  @Matches(/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$/, { message: 'from must be a date-time' })
  from?: string;

  @IsOptional()
  @Transform(emptyToUndefined)
  @Matches(/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$/, { message: 'to must be a date-time' })
  to?: string;

  @IsOptional()
  @Transform(emptyToUndefined)
  @IsString()
  @MaxLength(200)
  older?: string;

  @IsOptional()
  @Transform(emptyToUndefined)
  @IsString()
  @MaxLength(200)
  newer?: string;

  @IsOptional()
  @Transform(toNumber)
  @IsInt()
  @Min(1)
  @Max(100)
  limit?: number;
}

export class SandboxRunFormDto extends AdminFormDto {
  @IsString()
  @IsNotEmpty({ message: 'prompt must not be empty' })
  @MaxLength(4000)
  prompt!: string;

  @IsOptional()
  @Transform(toArray)
  @ArrayMinSize(1, { message: 'pick at least one engine' })
  @ArrayMaxSize(ENGINE_IDS.length)
  @IsIn(ENGINE_IDS, { each: true, message: `engines must contain only: ${ENGINE_IDS.join(', ')}` })
  engines?: EngineId[];

  @IsOptional()
  @Transform(toNumber)
  @IsInt({ message: 'seed must be an integer' })
  @Min(0)
  @Max(0xffffffff)
  seed?: number;

  @IsOptional()
  @Transform(toNumber)
  @IsInt({ message: 'steps must be an integer' })
  steps?: number;

  @IsOptional()
  @Transform(toNumber)
  @IsNumber({ allowNaN: false, allowInfinity: false }, { message: 'guidance must be a number' })
  guidance?: number;

  @IsOptional()
  @Transform(toNumber)
  @IsInt({ message: 'width must be an integer' })
  width?: number;

  @IsOptional()
  @Transform(toNumber)
  @IsInt({ message: 'height must be an integer' })
  height?: number;
}

export class ImageQueryDto {
  @IsOptional()
  @Transform(toNumber)
  @IsInt()
  @Min(0)
  @Max(15)
  index?: number;
}

export class SandboxRunsQueryDto extends LiveQueryDto {
  @IsOptional()
  @Transform(emptyToUndefined)
  @IsString()
  @MaxLength(200)
  older?: string;
}
