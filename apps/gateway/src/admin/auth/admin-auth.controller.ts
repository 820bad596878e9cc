import { Body, Controller, Get, HttpCode, Inject, Post, Query, Req, Res, UseGuards } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { ASSET_VERSION } from '../admin-assets.controller';
import { LoginDto, LoginPageQueryDto } from '../admin.dto';
import { loginPage } from '../views/login.view';
import { ADMIN_CREDENTIALS, fingerprint, READONLY_USER, sameSecret, type AdminCredentials } from './admin-credentials';
import { AdminGuard, AllowReadonly, type AdminRequest } from './admin.guard';
import { AdminSessionService, SESSION_COOKIE, SESSION_TTL_S } from './admin-session.service';
import { clearCookie, readCookie, setCookie } from './cookies';
import { Public } from '../../auth/api-key.guard';

/** The login form's own CSRF token (double submit): a cookie and a form field that must match. */
const LOGIN_COOKIE = 'flexy_admin_login';
const LOGIN_COOKIE_TTL_S = 3600;

/** Only a path inside the dashboard, so the login page cannot be used to send people elsewhere. */
function safeNext(next: string | undefined): string {
  return next && /^\/admin(\/|\?|$)/.test(next) && !next.startsWith('//') && !next.includes('\\') ? next : '/admin/queues';
}

function sameValue(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

@ApiExcludeController()
// The API-key guard stands aside: the dashboard has its own (sessions, admin and readonly keys).
@Public()
@Controller('admin')
export class AdminAuthController {
  constructor(
    private readonly sessions: AdminSessionService,
    @Inject(ADMIN_CREDENTIALS) private readonly credentials: AdminCredentials,
  ) {}

  @Get('login')
  async loginForm(@Req() req: Request, @Res() res: Response, @Query() q: LoginPageQueryDto) {
    const next = safeNext(q.next);
    const token = readCookie(req, SESSION_COOKIE);
    if (token && (await this.sessions.find(token))) return res.redirect(303, next);
    this.renderLogin(req, res, 200, next, null);
  }

  @Post('login')
  async login(@Req() req: Request, @Res() res: Response, @Body() body: LoginDto) {
    const next = safeNext(body.next);
    const expected = readCookie(req, LOGIN_COOKIE);
    if (!expected || !body._csrf || !sameValue(body._csrf, expected)) {
      return this.renderLogin(req, res, 403, next, 'The login form expired; please try again.');
    }
    const client = req.ip ?? 'unknown';
    if (!(await this.sessions.mayTryLogin(client))) {
      return this.renderLogin(req, res, 429, next, 'Too many failed attempts; wait a few minutes.');
    }
    const account = this.credentials.accounts.find((a) => a.user === body.user);
    // The hash is compared even for an unknown user, so timing does not tell which users exist.
    const ok = sameSecret(body.password, account?.passwordHash ?? this.credentials.accounts[0]?.passwordHash ?? Buffer.alloc(32)) && !!account;
    if (!ok) {
      await this.sessions.recordLoginFailure(client);
      return this.renderLogin(req, res, 401, next, 'Wrong user or password.');
    }
    const { token } = await this.sessions.open(account.user, account.role, fingerprint(account.passwordHash));
    clearCookie(req, res, LOGIN_COOKIE);
    setCookie(req, res, SESSION_COOKIE, token, SESSION_TTL_S);
    res.redirect(303, next);
  }

  @Post('logout')
  @HttpCode(303)
  @UseGuards(AdminGuard)
  @AllowReadonly()
  async logout(@Req() req: AdminRequest, @Res() res: Response) {
    const token = readCookie(req, SESSION_COOKIE);
    if (token) await this.sessions.close(token);
    clearCookie(req, res, SESSION_COOKIE);
    if ((req.get('accept') ?? '').includes('text/html')) res.redirect(303, '/admin/login');
    else res.status(200).json({ message: 'logged out', redirect: '/admin/login' });
  }

  private renderLogin(req: Request, res: Response, status: number, next: string, error: string | null): void {
    const csrf = randomBytes(24).toString('base64url');
    setCookie(req, res, LOGIN_COOKIE, csrf, LOGIN_COOKIE_TTL_S);
    res
      .status(status)
      .type('html')
      .send(
        loginPage({
          csrf,
          next,
          error,
          disabledReason: this.credentials.loginDisabledReason,
          readonlyEnabled: this.credentials.accounts.some((a) => a.user === READONLY_USER),
          assetVersion: ASSET_VERSION,
        }),
      );
  }
}
