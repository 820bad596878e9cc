/**
 * Metrics that supervisors observe and gateways serve. A generation's outcome and phase durations
 * are observed once, by the supervisor that ran its job, in that supervisor's prom-client registry;
 * each supervisor publishes the registry (`getMetricsAsJSON`) to Redis under its host id, and every
 * gateway process aggregates all of them on each scrape (`AggregatorRegistry.aggregate`). So any
 * gateway process answers /metrics with the same series, and none counts an event twice.
 */
export const SUPERVISOR_METRICS_PREFIX = 'flexy:metrics:supervisor:';
/** A supervisor that stopped publishing (gone) drops out after this long. */
export const SUPERVISOR_METRICS_TTL_S = 60;
export const supervisorMetricsKey = (host: string) => `${SUPERVISOR_METRICS_PREFIX}${host}`;

/** The phases of a generation, as recorded (columns `<phase>Ms`) and as the `phase` label. */
export const GENERATION_PHASES = ['queue_wait', 'load', 'text_encode', 'denoise', 'decode', 'encode_store', 'total'] as const;
export type GenerationPhase = (typeof GENERATION_PHASES)[number];

/** Seconds: from a cached engine's text encode (milliseconds) to a cold FLUX.2 load or a long queue wait. */
export const PHASE_SECONDS_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
