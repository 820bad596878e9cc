export interface SseMessage {
  id: string | null;
  event: string;
  data: any;
}

/**
 * Reads a Server-Sent Events response until `until` returns true or the stream ends. Plain fetch
 * and a line parser, as a browser's EventSource would see it.
 */
export async function readSse(url: string, opts: { lastEventId?: string; until?: (m: SseMessage) => boolean; timeoutMs?: number; headers?: Record<string, string> } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), opts.timeoutMs ?? 60_000);
  const res = await fetch(url, {
    headers: { accept: 'text/event-stream', ...(opts.lastEventId ? { 'last-event-id': opts.lastEventId } : {}), ...opts.headers },
    signal: controller.signal,
  });
  const messages: SseMessage[] = [];
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let sep: number;
      while ((sep = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, sep);
        buffer = buffer.slice(sep + 2);
        const msg: SseMessage = { id: null, event: 'message', data: null };
        let isComment = true;
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          isComment = false;
          const [field, ...rest] = line.split(':');
          const value = rest.join(':').replace(/^ /, '');
          if (field === 'id') msg.id = value;
          if (field === 'event') msg.event = value;
          if (field === 'data') msg.data = JSON.parse(value);
        }
        if (isComment) continue;
        messages.push(msg);
        if (opts.until?.(msg)) {
          controller.abort();
          return { status: res.status, messages };
        }
      }
    }
  } catch (err) {
    if ((err as Error).name !== 'AbortError') throw err;
  } finally {
    clearTimeout(timer);
  }
  return { status: res.status, messages };
}
