import { CanActivate, ExecutionContext, ForbiddenException, Inject, Injectable, SetMetadata, UnauthorizedException } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { APP_CONFIG, type AppConfig } from '@flexy/config';
import { PrismaService, type ApiKey } from '@flexy/persistence';
import type { Request } from 'express';
import { hashApiKey } from './api-keys';

export const PUBLIC_ROUTE = Symbol('PUBLIC_ROUTE');
/** Routes anyone may call (health checks, API docs). */
export const Public = () => SetMetadata(PUBLIC_ROUTE, true);

export type AuthedRequest = Request & { apiKey: ApiKey | null };

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Every API route needs a valid, unrevoked key (`Authorization: Bearer …` or `X-API-Key`), except
 * in open mode — the embedded default on loopback — where anonymous calls are allowed.
 */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  private readonly cache = new Map<string, { key: ApiKey | null; at: number }>();

  constructor(
    private readonly reflector: Reflector,
    private readonly prisma: PrismaService,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const req = context.switchToHttp().getRequest<AuthedRequest>();
    req.apiKey = null;
    if (this.reflector.getAllAndOverride<boolean>(PUBLIC_ROUTE, [context.getHandler(), context.getClass()])) return true;
    const presented = bearer(req) ?? (req.headers['x-api-key'] as string | undefined);
    if (!presented) {
      if (this.config.openAccess) return true;
      throw new UnauthorizedException('an API key is required (Authorization: Bearer <key>)');
    }
    const key = await this.lookup(hashApiKey(presented));
    if (!key || key.revokedAt) throw new UnauthorizedException('the API key is unknown or revoked');
    // Before the body is validated: a read-only key gets 403 for any write, however well-formed.
    if (key.role === 'readonly' && !SAFE_METHODS.has(req.method)) throw new ForbiddenException('this API key is read-only');
    req.apiKey = key;
    return true;
  }

  /** A few seconds of caching keeps the hot path off the database; revocation takes effect within that. */
  private async lookup(hash: string): Promise<ApiKey | null> {
    const hit = this.cache.get(hash);
    if (hit && Date.now() - hit.at < 5000) return hit.key;
    const key = await this.prisma.client.apiKey.findUnique({ where: { keyHash: hash } });
    this.cache.set(hash, { key, at: Date.now() });
    return key;
  }
}

function bearer(req: Request): string | undefined {
  const header = req.headers.authorization;
  return header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined;
}
