import { Body, Controller, Delete, Get, Headers, HttpCode, NotFoundException, Param, Post, Query } from '@nestjs/common';
import { ApiAcceptedResponse, ApiOkResponse, ApiQuery, ApiTags } from '@nestjs/swagger';
import { BATCH_ID_PATTERN } from '@flexy/contracts';
import { GenerationLifecycle, type Principal } from '@flexy/generations';
import { Caller } from '../auth/caller.decorator';
import { pageFilters, rethrowCursor, RunListQueryDto } from '../common/list-query.dto';
import { batchSummary, BatchesService } from './batches.service';
import { CreateBatchDto } from './create-batch.dto';

function checkedId(id: string): string {
  if (!BATCH_ID_PATTERN.test(id)) throw new NotFoundException(`batch ${id} not found`);
  return id;
}

@ApiTags('batches')
@Controller('v1/batches')
export class BatchesController {
  constructor(
    private readonly lifecycle: GenerationLifecycle,
    private readonly batches: BatchesService,
  ) {}

  @Post()
  @HttpCode(202)
  @ApiAcceptedResponse({ description: 'Queued at the lowest priority; GET shows counts and per-item results.' })
  async create(@Body() dto: CreateBatchDto, @Caller() caller: Principal, @Headers('idempotency-key') idempotencyKey?: string) {
    const { id } = await this.lifecycle.acceptBatch(caller, dto, { idempotencyKey });
    return this.batches.view(caller, id);
  }

  @Get()
  @ApiOkResponse({ description: "The caller's own batches, newest first, one page at a time (`next_cursor`)." })
  async list(@Query() q: RunListQueryDto, @Caller() caller: Principal) {
    const page = await this.lifecycle.listBatches(caller, { ...pageFilters(q), status: q.status }).catch(rethrowCursor);
    return { items: page.items.map((b) => batchSummary(b)), next_cursor: page.nextCursor };
  }

  @Get(':id')
  @ApiQuery({ name: 'cursor', required: false, description: 'next_cursor of the previous page' })
  @ApiOkResponse({ description: 'Status counts and a page of item results.' })
  get(@Param('id') id: string, @Caller() caller: Principal, @Query('cursor') cursor?: string) {
    return this.batches.view(caller, checkedId(id), cursor);
  }

  @Delete(':id')
  @HttpCode(202)
  @ApiAcceptedResponse({ description: 'Cancels every item not yet finished.' })
  cancel(@Param('id') id: string, @Caller() caller: Principal) {
    return this.lifecycle.cancelBatch(caller, checkedId(id));
  }
}
