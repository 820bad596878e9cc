import { Body, Controller, GatewayTimeoutException, Headers, HttpCode, HttpException, Inject, Post } from '@nestjs/common';
import { ApiGatewayTimeoutResponse, ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { generationLinks } from '@flexy/contracts';
import { APP_CONFIG, type AppConfig } from '@flexy/config';
import { GenerationLifecycle, type Principal } from '@flexy/generations';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import { Caller } from '../auth/caller.decorator';
import { CompletionWaiter } from '../generations/completion-waiter.service';
import { generationView } from '../generations/generation.view';
import { SandboxService } from '../sandbox/sandbox.service';
import { NerdSandboxDto, PromptPicsGenerateDto } from './promptpics.dto';

/**
 * Worker error codes mapped to the HTTP status a synchronous caller gets. Anything else (an internal
 * error) is a 502: the request was fine, the generation was not.
 */
const ERROR_STATUS: Record<string, number> = {
  bad_input: 400,
  oom: 503,
  engine_unavailable: 503,
  text_encoder_unavailable: 503,
  queue_unavailable: 503,
  storage_unavailable: 503,
  cancelled: 409,
};

/**
 * The two calls the PromptPics app makes, kept exactly as it sends them. Both go through the same
 * lifecycle and queue as every other request and wait for the result (bounded by SYNC_WAIT_MS).
 */
@ApiTags('promptpics')
@Controller()
export class PromptPicsController {
  constructor(
    private readonly lifecycle: GenerationLifecycle,
    private readonly waiter: CompletionWaiter,
    private readonly sandbox: SandboxService,
    @Inject(IMAGE_STORE) private readonly images: ImageStore,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
  ) {}

  @Post('generate')
  @HttpCode(200)
  @ApiOkResponse({ description: 'The image as base64 PNG in `image`, its URL, the engine, seed and timings.' })
  @ApiGatewayTimeoutResponse({ description: 'Not finished within the wait bound; the body carries the job id to poll.' })
  async generate(@Body() dto: PromptPicsGenerateDto, @Caller() caller: Principal, @Headers('idempotency-key') idempotencyKey?: string) {
    const { id } = await this.lifecycle.accept(caller, { ...dto, engine: dto.engine ?? 'flux1_dev' }, { idempotencyKey });
    const g = await this.waiter.terminal(id, this.config.syncWaitMs);
    if (!g) throw new GatewayTimeoutException({ statusCode: 504, message: `generation ${id} is still running`, id, links: generationLinks(id) });
    const view = generationView(g);
    if (g.status !== 'succeeded') {
      const status = (g.status === 'cancelled' ? ERROR_STATUS.cancelled : ERROR_STATUS[g.errorCode ?? '']) ?? 502;
      // Only the classified error travels: its code and the worker's one-line message, never a stack.
      throw new HttpException({ statusCode: status, id: g.id, status: g.status, error: view.error, message: view.error?.message ?? g.status }, status);
    }
    const png = await this.images.read(g.images[0].path);
    return {
      id: g.id,
      status: g.status,
      engine: g.engine,
      seed: Number(g.seed),
      image: png.toString('base64'),
      image_url: view.image_url,
      width: g.width,
      height: g.height,
      latency_ms: g.totalMs,
      timings: view.timings,
      weights: g.weights,
    };
  }

  @Post('nerd-sandbox')
  @HttpCode(200)
  @ApiOkResponse({ description: '`results`: one entry per engine with its image, latency and phase breakdown.' })
  async nerdSandbox(@Body() dto: NerdSandboxDto, @Caller() caller: Principal, @Headers('idempotency-key') idempotencyKey?: string) {
    const { id } = await this.lifecycle.acceptSandboxRun(caller, dto, { idempotencyKey });
    await this.sandbox.waitForRun(caller, id, this.config.syncWaitMs);
    return this.sandbox.view(caller, id, { inlineImages: true });
  }
}
