import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import { principalOf } from '@flexy/generations';
import type { AuthedRequest } from './api-key.guard';

/** The principal of an API call, from the key the guard found (none in open mode: the anonymous owner). */
export const Caller = createParamDecorator((_: unknown, ctx: ExecutionContext) => principalOf(ctx.switchToHttp().getRequest<AuthedRequest>().apiKey));
