import { Body, Controller, Delete, Get, HttpCode, NotFoundException, Param, Post, Query, Req } from '@nestjs/common';
import { ApiAcceptedResponse, ApiOkResponse, ApiQuery, ApiTags } from '@nestjs/swagger';
import type { AuthedRequest } from '../auth/api-key.guard';
import { QuotaService } from '../auth/quota.service';
import { BatchesService } from './batches.service';
import { CreateBatchDto } from './create-batch.dto';

const ID_PATTERN = /^bat_[0-9a-f]{32}$/;

@ApiTags('batches')
@Controller('v1/batches')
export class BatchesController {
  constructor(
    private readonly batches: BatchesService,
    private readonly quota: QuotaService,
  ) {}

  @Post()
  @HttpCode(202)
  @ApiAcceptedResponse({ description: 'Queued at the lowest priority; GET shows counts and per-item results.' })
  async create(@Body() dto: CreateBatchDto, @Req() req: AuthedRequest) {
    await this.quota.chargeRequest(req.apiKey);
    const id = await this.batches.create(dto, req.apiKey);
    return this.batches.view(id);
  }

  @Get(':id')
  @ApiQuery({ name: 'cursor', required: false, description: 'next_cursor of the previous page' })
  @ApiOkResponse({ description: 'Status counts and a page of item results.' })
  get(@Param('id') id: string, @Query('cursor') cursor?: string) {
    if (!ID_PATTERN.test(id)) throw new NotFoundException(`batch ${id} not found`);
    return this.batches.view(id, cursor);
  }

  @Delete(':id')
  @HttpCode(202)
  @ApiAcceptedResponse({ description: 'Cancels every item not yet finished.' })
  cancel(@Param('id') id: string) {
    if (!ID_PATTERN.test(id)) throw new NotFoundException(`batch ${id} not found`);
    return this.batches.cancel(id);
  }
}
