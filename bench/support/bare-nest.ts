/**
 * The baseline for the gateway benchmark: a bare NestJS app on the same platform (express) with one
 * POST route that parses JSON and answers 202, and nothing else — no validation, database or queue.
 */
import 'reflect-metadata';
import { Body, Controller, HttpCode, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

@Controller()
class BareController {
  @Post('bare')
  @HttpCode(202)
  accept(@Body() body: { prompt?: string }) {
    return { id: 'bare', status: 'queued', prompt_length: body?.prompt?.length ?? 0 };
  }
}

@Module({ controllers: [BareController] })
class BareModule {}

async function main() {
  const app = await NestFactory.create(BareModule, { logger: false });
  await app.listen(Number(process.env.PORT), '127.0.0.1');
  console.log('bare nest listening');
}

void main();
