import { Body, Controller, GatewayTimeoutException, Headers, HttpCode, HttpException, Inject, Post } from '@nestjs/common';
import { ApiBody, ApiHeader, ApiOperation, ApiTags } from '@nestjs/swagger';
import { generationLinks } from '@flexy/contracts';
import { APP_CONFIG, type AppConfig } from '@flexy/config';
import { GenerationLifecycle, type Principal } from '@flexy/generations';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import { Caller } from '../auth/caller.decorator';
import { CompletionWaiter } from '../generations/completion-waiter.service';
import { generationView } from '../generations/generation.view';
import { SandboxService } from '../sandbox/sandbox.service';
import { ApiErrors, ApiJson } from '../common/api-responses';
import { REQUEST_BODY } from '../openapi/request-bodies';
import { IDEMPOTENCY_KEY_HEADER } from '../openapi/shared';
import { SandboxRunView } from '../sandbox/sandbox.view';
import { NerdSandboxDto, PromptPicsGenerateDto } from './promptpics.dto';
import { PromptPicsImageView } from './promptpics.view';

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
  @ApiOperation({ operationId: 'generate', summary: 'Generate one image and wait for it (the PromptPics call)' })
  @ApiBody({ schema: REQUEST_BODY.promptPics })
  @ApiHeader(IDEMPOTENCY_KEY_HEADER)
  @ApiJson(200, PromptPicsImageView, 'The image as base64 PNG in `image`, its URL, the engine, seed and timings.', {
    links: { GetGeneration: { operationId: 'getGeneration', parameters: { id: '$response.body#/id' }, description: 'The generation behind it.' } },
  })
  @ApiErrors(
    400,
    401,
    403,
    [409, 'The generation was cancelled meanwhile (`generation` says which).'],
    413,
    422,
    429,
    [502, 'The generation failed inside the worker (`generation.error` says how).'],
    [503, 'The queue is unavailable, or the generation failed for want of memory or of its engine (`generation.error`); come back after Retry-After seconds.'],
    [504, 'Not finished within SYNC_WAIT_MS; `generation` names the job to poll.'],
  )
  async generate(@Body() dto: PromptPicsGenerateDto, @Caller() caller: Principal, @Headers('idempotency-key') idempotencyKey?: string) {
    const { id } = await this.lifecycle.accept(caller, { ...dto, engine: dto.engine ?? 'flux1_dev' }, { idempotencyKey });
    const g = await this.waiter.terminal(id, this.config.syncWaitMs);
    if (!g) {
      const status = (await this.lifecycle.get(caller, id).catch(() => null))?.status ?? 'queued';
      throw new GatewayTimeoutException({ message: `generation ${id} has not finished within the wait; poll it`, generation: { id, status, links: generationLinks(id) } });
    }
    const view = generationView(g);
    if (g.status !== 'succeeded') {
      const status = (g.status === 'cancelled' ? ERROR_STATUS.cancelled : ERROR_STATUS[g.errorCode ?? '']) ?? 502;
      // Only the classified error travels: its code and the worker's one-line message, never a stack.
      throw new HttpException({ message: view.error?.message ?? `generation ${g.id} is ${g.status}`, generation: { id: g.id, status: g.status, links: view.links, error: view.error } }, status);
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
  @ApiOperation({ operationId: 'nerdSandbox', summary: 'Compare engines on one prompt and wait for them (the PromptPics call)' })
  @ApiBody({ schema: REQUEST_BODY.sandboxRun })
  @ApiHeader(IDEMPOTENCY_KEY_HEADER)
  @ApiJson(200, SandboxRunView, '`results`: one entry per engine with its image (base64 PNG), latency and phase breakdown; engines still running after SYNC_WAIT_MS show their status instead.', {
    links: { GetSandboxRun: { operationId: 'getSandboxRun', parameters: { id: '$response.body#/id' }, description: 'The run behind it.' } },
  })
  @ApiErrors(400, 401, 403, 413, 422, 429, 503)
  async nerdSandbox(@Body() dto: NerdSandboxDto, @Caller() caller: Principal, @Headers('idempotency-key') idempotencyKey?: string) {
    const { id } = await this.lifecycle.acceptSandboxRun(caller, dto, { idempotencyKey });
    await this.sandbox.waitForRun(caller, id, this.config.syncWaitMs);
    return this.sandbox.view(caller, id, { inlineImages: true });
  }
}
