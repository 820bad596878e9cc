/** Redis keys for per-API-key limits, shared by the gateway (charges) and the supervisor (releases). */
export const inflightKey = (apiKeyId: string) => `flexy:inflight:${apiKeyId}`;
export const rateWindowKey = (apiKeyId: string, window: number) => `flexy:rate:${apiKeyId}:${window}`;
