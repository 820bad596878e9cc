/**
 * The rules of a generation that every part of the service shares: its statuses, the seed range, the
 * shape of its URLs. Written once here; the database enum is checked against the statuses by a spec,
 * and the Python worker reads the seed range from the generated catalog JSON.
 */

export const GENERATION_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type GenerationStatusName = (typeof GENERATION_STATUSES)[number];

/** Statuses a generation can still leave. */
export const ACTIVE_STATUSES = ['queued', 'running'] as const satisfies readonly GenerationStatusName[];
/** Statuses it never leaves: results are never overwritten. */
export const TERMINAL_STATUSES = ['succeeded', 'failed', 'cancelled'] as const satisfies readonly GenerationStatusName[];
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

export function isTerminalStatus(status: string): status is TerminalStatus {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

/** Seeds are 32-bit: every engine's generator accepts them, and they round-trip through JSON and SQL exactly. */
export const SEED_RANGE = { min: 0, max: 0xffffffff } as const;

/** How a generation's id looks; anything else is a 404 before any lookup. */
export const GENERATION_ID_PATTERN = /^gen_[0-9a-f]{32}$/;
export const SANDBOX_RUN_ID_PATTERN = /^sbx_[0-9a-f]{32}$/;
export const BATCH_ID_PATTERN = /^bat_[0-9a-f]{32}$/;

/** Where a generation's resource, image and live events are: the one place these URLs are built. */
export const generationUrls = {
  self: (id: string) => `/v1/generations/${id}`,
  image: (id: string, index = 0) => `/v1/generations/${id}/image?index=${index}`,
  events: (id: string) => `/v1/generations/${id}/events`,
  cancel: (id: string) => `/v1/generations/${id}/cancel`,
};

export function generationLinks(id: string) {
  return { self: generationUrls.self(id), image: generationUrls.image(id), events: generationUrls.events(id), cancel: generationUrls.cancel(id) };
}
