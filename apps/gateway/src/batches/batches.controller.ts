import { Body, Controller, Get, Headers, HttpCode, NotFoundException, Param, Post, Query } from '@nestjs/common';
import { ApiBody, ApiHeader, ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { BATCH_ID_PATTERN } from '@flexy/contracts';
import { GenerationLifecycle, type Principal } from '@flexy/generations';
import { Caller } from '../auth/caller.decorator';
import { BatchItemsQueryDto, pageFilters, rethrowCursor, RunListQueryDto } from '../common/list-query.dto';
import { ApiErrors, ApiJson } from '../common/api-responses';
import { REQUEST_BODY } from '../openapi/request-bodies';
import { IDEMPOTENCY_KEY_HEADER } from '../openapi/shared';
import { BatchCancelView, BatchPageView, BatchView } from './batch.view';
import { batchSummary, BatchesService } from './batches.service';
import { CreateBatchDto } from './create-batch.dto';

const ID_PARAM = { name: 'id', description: 'The batch id (`bat_` and 32 hex digits).', schema: { type: 'string' } } as const;
const byId = { id: '$response.body#/id' };
const BATCH_LINKS = {
  GetBatch: { operationId: 'getBatch', parameters: byId, description: 'Counts and per-item results.' },
  CancelBatch: { operationId: 'cancelBatch', parameters: byId, description: 'Cancel whatever has not finished.' },
};

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
  @ApiOperation({ operationId: 'createBatch', summary: 'Create a batch: prompts × engines × seeds' })
  @ApiBody({ schema: REQUEST_BODY.batch })
  @ApiHeader(IDEMPOTENCY_KEY_HEADER)
  @ApiJson(202, BatchView, 'Queued at the lowest priority; GET shows counts and per-item results.', { links: BATCH_LINKS })
  @ApiErrors(400, 401, 403, 413, [422, 'Settings one of the named engines refuses, more than 1,000 items, a webhook target that is not public, or a reused Idempotency-Key; `fields` says which.'], 429, 503)
  async create(@Body() dto: CreateBatchDto, @Caller() caller: Principal, @Headers('idempotency-key') idempotencyKey?: string) {
    const { id } = await this.lifecycle.acceptBatch(caller, dto, { idempotencyKey });
    return this.batches.view(caller, id);
  }

  @Get()
  @ApiOperation({ operationId: 'listBatches', summary: "The caller's own batches" })
  @ApiJson(200, BatchPageView, 'Newest first, one page at a time (`next_cursor`).')
  @ApiErrors(400, 401, 422, 429)
  async list(@Query() q: RunListQueryDto, @Caller() caller: Principal) {
    const page = await this.lifecycle.listBatches(caller, { ...pageFilters(q), status: q.status }).catch(rethrowCursor);
    return { items: page.items.map((b) => batchSummary(b)), next_cursor: page.nextCursor };
  }

  @Get(':id')
  @ApiOperation({ operationId: 'getBatch', summary: 'A batch' })
  @ApiParam(ID_PARAM)
  @ApiJson(200, BatchView, 'Status counts and a page of item results.', { links: { CancelBatch: BATCH_LINKS.CancelBatch } })
  @ApiErrors(400, 401, 404, 429)
  get(@Param('id') id: string, @Caller() caller: Principal, @Query() q: BatchItemsQueryDto) {
    return this.batches.view(caller, checkedId(id), q.cursor);
  }

  @Post(':id/cancel')
  @HttpCode(202)
  @ApiOperation({ operationId: 'cancelBatch', summary: 'Cancel every item of a batch not yet finished (the batch stays readable)' })
  @ApiParam(ID_PARAM)
  @ApiJson(202, BatchCancelView, 'Queued items are removed, running ones stop within one step; finished ones keep their results.', { links: { GetBatch: BATCH_LINKS.GetBatch } })
  @ApiErrors(401, 403, 404, 429)
  cancel(@Param('id') id: string, @Caller() caller: Principal) {
    return this.lifecycle.cancelBatch(caller, checkedId(id));
  }
}
