import { Body, Controller, GatewayTimeoutException, HttpCode, HttpException, Inject, Post } from '@nestjs/common';
import { ApiGatewayTimeoutResponse, ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { APP_CONFIG, type AppConfig } from '@flexy/config';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import { generationLinks, generationView } from '../generations/generation.view';
import { GenerationsService } from '../generations/generations.service';
import { SandboxService } from '../sandbox/sandbox.service';
import { NerdSandboxDto, PromptPicsGenerateDto } from './promptpics.dto';

/** Worker error codes mapped to the HTTP status a synchronous caller gets. */
const ERROR_STATUS: Record<string, number> = { bad_input: 400, oom: 503, engine_unavailable: 503, text_encoder_unavailable: 503, cancelled: 409 };

/**
 * The two calls the PromptPics app makes, kept exactly as it sends them. Both go through the same
 * queue as every other request and wait for the result (bounded by SYNC_WAIT_MS).
 */
@ApiTags('promptpics')
@Controller()
export class PromptPicsController {
  constructor(
    private readonly generations: GenerationsService,
    private readonly sandbox: SandboxService,
    @Inject(IMAGE_STORE) private readonly images: ImageStore,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
  ) {}

  @Post('generate')
  @HttpCode(200)
  @ApiOkResponse({ description: 'The image as base64 PNG in `image`, its URL, the engine, seed and timings.' })
  @ApiGatewayTimeoutResponse({ description: 'Not finished within the wait bound; the body carries the job id to poll.' })
  async generate(@Body() dto: PromptPicsGenerateDto) {
    const created = await this.generations.create({ ...dto, engine: dto.engine ?? 'flux1_dev' });
    const g = await this.generations.waitForTerminal(created.id, this.config.syncWaitMs);
    if (!g) {
      throw new GatewayTimeoutException({ statusCode: 504, message: `generation ${created.id} is still running`, id: created.id, links: generationLinks(created.id) });
    }
    const view = generationView(g);
    if (g.status !== 'succeeded') {
      throw new HttpException({ statusCode: ERROR_STATUS[g.errorCode ?? ''] ?? 500, id: g.id, status: g.status, error: view.error, message: view.error?.message ?? g.status }, ERROR_STATUS[g.errorCode ?? ''] ?? 500);
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
  async nerdSandbox(@Body() dto: NerdSandboxDto) {
    const run = await this.sandbox.create(dto);
    await this.sandbox.waitForRun(run.id, this.config.syncWaitMs);
    return this.sandbox.view(run.id, { inlineImages: true });
  }
}
