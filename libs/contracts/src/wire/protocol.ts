/**
 * Wire protocol between the supervisor and one Python worker, over the worker's stdin/stdout.
 *
 * Every message is one frame:
 *
 *   u32 big-endian header length | u32 big-endian payload length | header (UTF-8 JSON object) | payload bytes
 *
 * The header always has a `type`. The payload carries binary data (raw pixels) so nothing is base64 on
 * this pipe; most messages have an empty payload. Headers are serialised canonically, exactly as
 * `JSON.stringify(header)` writes them: compact, keys in insertion order, non-ASCII as raw UTF-8,
 * numbers as `Number#toString` writes them (4.0 → 4); NaN and Infinity are refused. The Python side mirrors these types in
 * `worker-python/flexy_worker/protocol.py`; both are checked against `wire-vectors.json`.
 */

import type { GenerationParams } from '@flexy/engines';

export const PROTOCOL_VERSION = 1;
/** Frames larger than this are a protocol error (64 MP of RGB plus headroom). */
export const MAX_FRAME_BYTES = 256 * 1024 * 1024;
export const FRAME_PREFIX_BYTES = 8;

/** Exit codes with a meaning the supervisor acts on. */
export const WorkerExitCode = {
  /** Clean shutdown after a `shutdown` message or SIGTERM. */
  Ok: 0,
  /** The CUDA context is poisoned (illegal address, launch failure, ECC): restart at once. */
  CudaPoisoned: 70,
  /** Out of memory while loading the preload set: restart with a smaller one. */
  PreloadOom: 71,
  /** The supervisor sent something the worker cannot parse. */
  ProtocolError: 72,
  /** A process of the worker's device group died (or fell out of step): the group restarts, as after any crash. */
  RankLost: 73,
} as const;

export type WeightsKind = 'demo' | 'random' | 'hub';
export type ErrorCode =
  | 'bad_input'
  | 'oom'
  | 'cancelled'
  | 'interrupted'
  | 'engine_unavailable'
  | 'text_encoder_unavailable'
  | 'cuda_fatal'
  | 'internal';

/** Raw RGB8 image description; its bytes are a slice of the frame payload. */
export interface RawImageRef {
  width: number;
  height: number;
  channels: 3;
  byte_length: number;
}

// ---- supervisor → worker ------------------------------------------------------------------------

/** A job: its id and engine, every generation parameter (the API's names), references and preview cadence. */
export type GenerateMessage = {
  type: 'generate';
  job_id: string;
  engine: string;
} & GenerationParams & {
  /** Reference images for engines that condition on them; pixels follow in the payload, in order. */
  references: RawImageRef[];
  /** Send a `progress` preview every N steps (0 = never). */
  preview_every: number;
};

/** A user's cancel: the job stops between two steps and is answered `cancelled`. */
export interface CancelMessage {
  type: 'cancel';
  job_id: string;
}

/** The supervisor takes the job back (it is stopping, or lost the job's lock): answered `interrupted`. */
export interface InterruptMessage {
  type: 'interrupt';
  job_id: string;
}

export interface PingMessage {
  type: 'ping';
  seq: number;
}

export interface UnloadMessage {
  type: 'unload';
  /** null unloads every engine. */
  engine: string | null;
}

export interface ShutdownMessage {
  type: 'shutdown';
}

/**
 * Ends a standby worker's wait. A standby worker (`--standby`) imports everything it needs, then
 * waits for this before it touches the device: a spare the supervisor keeps ready to replace a worker
 * that died, so a restart does not pay for the imports.
 */
export interface StartMessage {
  type: 'start';
}

export type SupervisorMessage = GenerateMessage | CancelMessage | InterruptMessage | PingMessage | UnloadMessage | ShutdownMessage | StartMessage;

// ---- worker → supervisor ------------------------------------------------------------------------

export interface ResidencyReport {
  /** Engines whose pipelines are loaded (on the device or parked in host memory). */
  engines: Array<{ engine: string; location: 'device' | 'host'; bytes: number }>;
  device_bytes_used: number;
  device_budget_bytes: number;
  last_load_ms: number | null;
  last_swap_ms: number | null;
}

/**
 * Health of one engine on one worker: `unavailable` when its files fail their manifest check, it
 * cannot be loaded or its canary failed; its jobs then fail at once (`engine_unavailable`) until it is
 * tried again at `retry_at` (ms since the epoch), while the worker's other engines keep serving.
 */
export type EngineState = 'available' | 'unavailable';

/** An engine whose snapshot the worker found: the kind of weights it holds and its health. */
export interface EngineInfo {
  engine: string;
  weights: WeightsKind;
  revision: string;
  state: EngineState;
  reason: string | null;
  retry_at: number | null;
}

export interface ReadyMessage {
  type: 'ready';
  protocol: number;
  pid: number;
  device: string;
  torch_version: string;
  diffusers_version: string;
  /** Engines whose snapshots were found, with the kind of weights they hold. */
  engines: EngineInfo[];
  residency: ResidencyReport;
}

export interface PongMessage {
  type: 'pong';
  seq: number;
  /** The job on the GPU thread, if any, and when it last reported a step (ms since epoch). */
  busy_job_id: string | null;
  last_progress_at: number | null;
  residency: ResidencyReport;
  /** Each engine's health now (it changes while the worker runs: a failed load, files fixed). */
  engines: EngineInfo[];
}

export interface ProgressMessage {
  type: 'progress';
  job_id: string;
  step: number;
  total_steps: number;
  elapsed_ms: number;
  /** When present, a small RGB preview decoded from the latents follows in the payload. */
  preview: RawImageRef | null;
}

export interface ImageMessage {
  type: 'image';
  job_id: string;
  index: number;
  image: RawImageRef;
}

export interface Timings {
  load_ms: number;
  text_encode_ms: number;
  denoise_ms: number;
  decode_ms: number;
  total_ms: number;
}

export interface ResultMessage {
  type: 'result';
  job_id: string;
  /**
   * `cancelled` answers a cancel message and nothing else; `interrupted` is a job the worker stopped
   * or never started for any other reason (SIGTERM, a shutdown, its supervisor gone): it goes back to
   * the queue.
   */
  status: 'succeeded' | 'failed' | 'cancelled' | 'interrupted';
  error: { code: ErrorCode; message: string; field: string | null } | null;
  timings: Timings;
  weights: WeightsKind | null;
  model_revision: string | null;
  num_images: number;
}

export type WorkerMessage = ReadyMessage | PongMessage | ProgressMessage | ImageMessage | ResultMessage;
