/** The BullMQ queue generations are delivered through (the gateway and the supervisor each provide it). */
export const GENERATION_QUEUE = Symbol('GENERATION_QUEUE');
/** The queue of webhook deliveries. */
export const WEBHOOK_QUEUE = Symbol('WEBHOOK_QUEUE');
