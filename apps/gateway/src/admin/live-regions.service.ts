import { Injectable, Logger, type BeforeApplicationShutdown } from '@nestjs/common';
import type { Response } from 'express';
import type { SafeHtml } from './views/html';

/** A stream ends after this long; the browser reconnects at once, which re-checks the session. */
const MAX_STREAM_MS = 5 * 60_000;
const KEEP_ALIVE_MS = 15_000;

/**
 * Live updates without reloading: a page's live region, rendered on the server, pushed as
 * Server-Sent Events whenever it changes. The page script swaps it in; the browser never polls.
 */
@Injectable()
export class LiveRegions implements BeforeApplicationShutdown {
  private readonly logger = new Logger(LiveRegions.name);
  private readonly open = new Set<() => void>();

  async stream(res: Response, render: () => Promise<SafeHtml>, intervalMs: number): Promise<void> {
    res.status(200).set({
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.flushHeaders();
    res.write('retry: 2000\n\n');
    let closed = false;
    let wake: () => void = () => undefined;
    const close = () => {
      closed = true;
      wake();
    };
    this.open.add(close);
    res.on('close', close);
    const started = Date.now();
    let last: string | null = null;
    let lastWrite = Date.now();
    try {
      while (!closed && Date.now() - started < MAX_STREAM_MS) {
        try {
          const region = (await render()).value;
          if (region !== last) {
            res.write(`event: region\n${region.split('\n').map((line) => `data: ${line}`).join('\n')}\n\n`);
            last = region;
            lastWrite = Date.now();
          }
        } catch (err) {
          // Redis or the database briefly unavailable: say so, keep the last good region, try again.
          res.write(`event: problem\ndata: ${(err as Error).message.replace(/\n/g, ' ')}\n\n`);
          lastWrite = Date.now();
        }
        if (Date.now() - lastWrite > KEEP_ALIVE_MS) {
          res.write(': keep-alive\n\n');
          lastWrite = Date.now();
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, intervalMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    } finally {
      this.open.delete(close);
      if (!res.writableEnded) res.end();
    }
  }

  /** Open streams would hold the HTTP server open; they end before it closes. */
  beforeApplicationShutdown(): void {
    if (this.open.size) this.logger.log(`closing ${this.open.size} live stream(s)`);
    for (const close of [...this.open]) close();
  }
}
