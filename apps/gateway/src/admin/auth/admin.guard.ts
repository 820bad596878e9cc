import { ForbiddenException, Inject, Injectable, SetMetadata, UnauthorizedException, type CanActivate, type ExecutionContext } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { PrismaService } from '@flexy/persistence';
import type { Request } from 'express';
import { timingSafeEqual } from 'node:crypto';
import { hashApiKey } from '../../auth/api-keys';
import type { AdminPrincipal } from '../admin.dto';
import { ADMIN_CREDENTIALS, fingerprint, type AdminCredentials } from './admin-credentials';
import { AdminSessionService, SESSION_COOKIE } from './admin-session.service';
import { readCookie } from './cookies';

export type AdminRequest = Request & { admin?: AdminPrincipal };

/** No valid session or key: pages answer with a redirect to the login page, the API with 401. */
export class AdminAuthRequiredException extends UnauthorizedException {
  constructor(message = 'admin login required') {
    super({ statusCode: 401, error: 'Unauthorized', message });
  }
}

const ALLOW_READONLY = 'flexy:admin:allow-readonly';
/** A state-changing route the read-only role may still call (logging out). */
export const AllowReadonly = () => SetMetadata(ALLOW_READONLY, true);

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

function sameToken(sent: string, expected: string): boolean {
  const a = Buffer.from(sent);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Every /admin route except login and the static assets: authenticates by session cookie or by an
 * API key with the admin or readonly role, refuses a state-changing session request without its CSRF token (header X-CSRF-Token or form
 * field _csrf), and keeps the read-only role to safe methods.
 */
@Injectable()
export class AdminGuard implements CanActivate {
  constructor(
    private readonly sessions: AdminSessionService,
    @Inject(ADMIN_CREDENTIALS) private readonly credentials: AdminCredentials,
    private readonly reflector: Reflector,
    private readonly prisma: PrismaService,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const req = context.switchToHttp().getRequest<AdminRequest>();
    const principal = await this.authenticate(req);
    req.admin = principal;
    if (SAFE_METHODS.has(req.method)) return true;
    if (principal.via === 'session') {
      const sent = req.get('x-csrf-token') ?? (typeof req.body?._csrf === 'string' ? req.body._csrf : '');
      if (!sent || !sameToken(sent, principal.csrfToken!)) throw new ForbiddenException('missing or invalid CSRF token');
    }
    const allowReadonly = this.reflector.getAllAndOverride<boolean>(ALLOW_READONLY, [context.getHandler(), context.getClass()]);
    if (principal.role !== 'admin' && !allowReadonly) throw new ForbiddenException('the read-only role cannot change anything');
    return true;
  }

  private async authenticate(req: Request): Promise<AdminPrincipal> {
    const authorization = req.get('authorization');
    const presented = authorization ? (/^Bearer\s+(\S+)$/i.exec(authorization)?.[1] ?? '') : req.get('x-api-key');
    if (presented !== undefined) {
      // A request that presents a key is judged by the key alone: an API key with the admin or readonly role.
      const key = presented ? await this.prisma.client.apiKey.findUnique({ where: { keyHash: hashApiKey(presented) } }) : null;
      if (!key || key.revokedAt) throw new AdminAuthRequiredException('the API key is unknown or revoked');
      if (key.role !== 'admin' && key.role !== 'readonly') throw new ForbiddenException('the dashboard needs a key with the admin or readonly role');
      return { user: `key ${key.prefix} (${key.name})`, role: key.role, via: 'key', csrfToken: null };
    }
    const token = readCookie(req, SESSION_COOKIE);
    const session = token ? await this.sessions.find(token) : null;
    const account = session && this.credentials.accounts.find((a) => a.user === session.user && a.role === session.role);
    if (!session || !account || fingerprint(account.passwordHash) !== session.credential) throw new AdminAuthRequiredException();
    return { user: session.user, role: session.role, via: 'session', csrfToken: session.csrf };
  }
}
