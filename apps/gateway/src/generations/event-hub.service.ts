import { Inject, Injectable, Logger, type OnModuleDestroy } from '@nestjs/common';
import { REDIS } from '@flexy/config';
import type Redis from 'ioredis';

/** One entry of a generation's event stream. */
export interface StreamEntry {
  id: string;
  fields: string[];
}

type Listener = (entries: StreamEntry[]) => void;
type XreadReply = Array<[string, Array<[string, string[]]>]> | null;

const BLOCK_MS = 5000;

/** Compares Redis stream ids ("ms-seq") numerically. */
export function compareStreamIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  return am === bm ? Number(as - bs) : am < bm ? -1 : 1;
}

/**
 * Follows every generation event stream that some client of this gateway process is watching, over
 * ONE blocking Redis connection, and fans new entries out to the listeners of each stream. A stream
 * joining the set wakes the blocked read (CLIENT UNBLOCK) so it is read from then on; the connection
 * count stays at two per process however many clients watch.
 */
@Injectable()
export class EventHub implements OnModuleDestroy {
  private readonly logger = new Logger(EventHub.name);
  private readonly listeners = new Map<string, Set<Listener>>();
  /** The last entry id read from each followed stream. */
  private readonly cursors = new Map<string, string>();
  private reader: Redis | null = null;
  private readerId: number | null = null;
  private running = false;
  private closed = false;

  constructor(@Inject(REDIS) private readonly redis: Redis) {}

  /**
   * Listens to new entries of `key` after `afterId` (the caller replays what came before it). The
   * returned function stops listening.
   */
  async follow(key: string, afterId: string, listener: Listener): Promise<() => void> {
    let set = this.listeners.get(key);
    if (!set) {
      set = new Set();
      this.listeners.set(key, set);
      this.cursors.set(key, afterId);
    }
    // A listener that joins a stream the hub already follows may get entries it also replays: listeners dedupe by id.
    set.add(listener);
    await this.ensureRunning();
    await this.wake();
    return () => {
      set!.delete(listener);
      if (set!.size === 0) {
        this.listeners.delete(key);
        this.cursors.delete(key);
      }
    };
  }

  async onModuleDestroy(): Promise<void> {
    this.closed = true;
    this.reader?.disconnect();
  }

  private async ensureRunning(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.reader = this.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null });
    this.reader.on('error', () => undefined); // reconnects by itself; the loop retries
    this.readerId = (await this.reader.client('ID')) as number;
    void this.loop();
  }

  /** Interrupts the blocked read so the next one includes newly followed streams. */
  private async wake(): Promise<void> {
    if (this.readerId !== null) await this.redis.client('UNBLOCK', this.readerId).catch(() => undefined);
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      const keys = [...this.listeners.keys()];
      if (keys.length === 0) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      let reply: XreadReply;
      try {
        reply = (await this.reader!.xread('BLOCK', BLOCK_MS, 'STREAMS', ...keys, ...keys.map((k) => this.cursors.get(k)!))) as XreadReply;
      } catch (err) {
        if (this.closed) return;
        this.logger.warn(`reading event streams: ${(err as Error).message}`);
        await new Promise((resolve) => setTimeout(resolve, 500));
        continue;
      }
      for (const [key, raw] of reply ?? []) {
        if (!this.listeners.has(key) || raw.length === 0) continue;
        const entries = raw.map(([id, fields]) => ({ id, fields }));
        this.cursors.set(key, entries[entries.length - 1].id);
        for (const listener of this.listeners.get(key) ?? []) listener(entries);
      }
    }
  }
}
