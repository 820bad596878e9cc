import { Injectable } from '@nestjs/common';
import { createHash, randomBytes } from 'node:crypto';
import type { AdminRole } from '../admin.dto';
import { GatewayServices } from '../gateway-services';

export const SESSION_COOKIE = 'flexy_admin';
export const SESSION_TTL_S = 8 * 3600;
const LOGIN_FAILURES_WINDOW_S = 15 * 60;
const LOGIN_FAILURES_MAX = 10;

export interface AdminSession {
  user: string;
  role: AdminRole;
  /** Synchronizer token: every state-changing request of this session must echo it. */
  csrf: string;
  /** Fingerprint of the password it was opened with; a changed password ends the session. */
  credential: string;
  createdAt: number;
}

const sessionKey = (token: string) => `flexy:admin:session:${createHash('sha256').update(token).digest('hex')}`;
const failuresKey = (client: string) => `flexy:admin:login-failures:${client}`;

/**
 * Dashboard sessions, kept in Redis so that any gateway behind a load balancer recognises them.
 * Only a hash of the cookie value is stored as the key.
 */
@Injectable()
export class AdminSessionService {
  constructor(private readonly gateway: GatewayServices) {}

  private get redis() {
    return this.gateway.redis;
  }

  async open(user: string, role: AdminRole, credential: string): Promise<{ token: string; session: AdminSession }> {
    const token = randomBytes(32).toString('base64url');
    const session: AdminSession = { user, role, csrf: randomBytes(32).toString('base64url'), credential, createdAt: Date.now() };
    await this.redis.set(sessionKey(token), JSON.stringify(session), 'EX', SESSION_TTL_S);
    return { token, session };
  }

  async find(token: string): Promise<AdminSession | null> {
    const raw = await this.redis.get(sessionKey(token));
    return raw ? (JSON.parse(raw) as AdminSession) : null;
  }

  async close(token: string): Promise<void> {
    await this.redis.del(sessionKey(token));
  }

  /** True while the client may still try: at most LOGIN_FAILURES_MAX wrong passwords per window. */
  async mayTryLogin(client: string): Promise<boolean> {
    return Number((await this.redis.get(failuresKey(client))) ?? 0) < LOGIN_FAILURES_MAX;
  }

  async recordLoginFailure(client: string): Promise<void> {
    await this.redis.multi().incr(failuresKey(client)).expire(failuresKey(client), LOGIN_FAILURES_WINDOW_S).exec();
  }
}
