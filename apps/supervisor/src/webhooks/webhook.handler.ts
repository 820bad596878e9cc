import { Inject, Injectable, Logger } from '@nestjs/common';
import { generationUrls, JobName, type WebhookJobPayload, type WebhookJobResult } from '@flexy/contracts';
import { APP_CONFIG, type AppConfig } from '@flexy/config';
import { PrismaService } from '@flexy/persistence';
import { deliverWebhook, WebhookTargetRefused } from '@flexy/webhooks';
import { UnrecoverableError, type Job } from 'bullmq';
import { createHmac, randomUUID } from 'node:crypto';
import { OnJob } from '../jobs/on-job.decorator';

/** `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: receivers recompute it and check the age. */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/**
 * Delivers one webhook: a signed POST with the generation's outcome. A non-2xx answer (a redirect
 * included: it is not followed) or a network error throws, so the queue retries with backoff; a
 * target the outbound policy refuses (@flexy/webhooks, checked again before every attempt) fails
 * the job at once. Every attempt is recorded.
 */
@Injectable()
export class WebhookHandler {
  private readonly logger = new Logger(WebhookHandler.name);

  constructor(
    private readonly prisma: PrismaService,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
  ) {}

  @OnJob(JobName.DeliverWebhook)
  async handle(job: Job<WebhookJobPayload>): Promise<WebhookJobResult> {
    const { generationId, url } = job.data;
    const g = await this.prisma.client.generation.findUnique({ where: { id: generationId }, include: { images: true } });
    if (!g) throw new Error(`generation ${generationId} not found`);
    const body = JSON.stringify({
      type: `generation.${g.status}`,
      generation: {
        id: g.id,
        status: g.status,
        engine: g.engine,
        seed: Number(g.seed),
        image_urls: g.images.map((i) => generationUrls.image(g.id, i.index)),
        error: g.errorCode ? { code: g.errorCode, message: g.errorMessage, field: g.errorField } : null,
        total_ms: g.totalMs,
      },
    });
    const timestamp = Math.floor(Date.now() / 1000);
    const attempt = job.attemptsMade + 1;
    let statusCode: number | null = null;
    let error: string | null = null;
    let refused = false;
    try {
      const headers = {
        'content-type': 'application/json',
        'user-agent': 'FlexyFace-Webhooks/1',
        'x-flexyface-signature': signWebhook(this.config.webhookSecret, timestamp, body),
        'x-flexyface-delivery': `${generationId}:${attempt}`,
      };
      const res = await deliverWebhook(url, { headers, body }, { allowPrivate: this.config.webhookAllowPrivate });
      statusCode = res.statusCode;
      if (statusCode >= 300 && statusCode < 400) error = `answered ${statusCode}; redirects are not followed`;
      else if (statusCode < 200 || statusCode >= 300) error = `answered ${statusCode}`;
    } catch (err) {
      refused = err instanceof WebhookTargetRefused;
      error = refused ? `target refused: ${(err as Error).message}` : (err as Error).message;
    }
    await this.prisma.client.webhookDelivery.upsert({
      where: { generationId_attempt: { generationId, attempt } },
      create: { id: randomUUID(), generationId, url, attempt, statusCode, error, deliveredAt: error ? null : new Date() },
      update: { statusCode, error, deliveredAt: error ? null : new Date() },
    });
    if (error) {
      this.logger.warn(`webhook for ${generationId} attempt ${attempt}: ${error}`);
      // The policy gives the same answer next time: no retries.
      throw refused ? new UnrecoverableError(error) : new Error(error);
    }
    return { statusCode: statusCode! };
  }
}
