import { Body, Controller, Get, HttpCode, Inject, NotFoundException, Param, Post, Query, Res } from '@nestjs/common';
import { ApiAcceptedResponse, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import { IMAGE_STORE, ImageStore } from '@flexy/storage';
import type { Response } from 'express';
import sharp from 'sharp';
import { CreateGenerationDto } from './create-generation.dto';
import { generationView } from './generation.view';
import { GenerationsService } from './generations.service';
import { ImageQueryDto } from './image-query.dto';

const ID_PATTERN = /^gen_[0-9a-f]{32}$/;

@ApiTags('generations')
@Controller('v1/generations')
export class GenerationsController {
  constructor(
    private readonly service: GenerationsService,
    @Inject(IMAGE_STORE) private readonly images: ImageStore,
  ) {}

  @Post()
  @HttpCode(202)
  @ApiAcceptedResponse({ description: 'Queued; poll the `self` link or follow `events`.' })
  async create(@Body() dto: CreateGenerationDto) {
    const g = await this.service.create(dto);
    const view = generationView({ ...g, images: [] });
    return { id: view.id, status: view.status, links: view.links };
  }

  @Get(':id')
  @ApiOkResponse({ description: 'The generation with its parameters, timings and image links.' })
  async get(@Param('id') id: string) {
    if (!ID_PATTERN.test(id)) throw new NotFoundException(`generation ${id} not found`);
    return generationView(await this.service.get(id));
  }

  @Get(':id/image')
  @ApiProduces('image/png', 'image/webp', 'image/jpeg')
  async image(@Param('id') id: string, @Query() query: ImageQueryDto, @Res() res: Response) {
    if (!ID_PATTERN.test(id)) throw new NotFoundException(`generation ${id} not found`);
    const g = await this.service.get(id);
    const img = g.images?.find((i) => i.index === (query.index ?? 0));
    if (g.status !== 'succeeded' || !img) throw new NotFoundException(`generation ${id} has no image ${query.index ?? 0} (status ${g.status})`);
    const png = await this.images.read(img.path);
    const format = query.format ?? 'png';
    const body = format === 'png' ? png : await sharp(png).toFormat(format, { quality: 90 }).toBuffer();
    res
      .status(200)
      .type(`image/${format}`)
      .set('Cache-Control', 'public, max-age=31536000, immutable')
      .set('Content-Disposition', `inline; filename="${id}_${img.index}.${format === 'jpeg' ? 'jpg' : format}"`)
      .send(body);
  }
}
