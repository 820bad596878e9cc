import { Logger } from '@nestjs/common';
import { isLoopback, type AppConfig } from '@flexy/config';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { AdminRole } from '../admin.dto';

export interface AdminAccount {
  user: string;
  role: AdminRole;
  /** sha256 of the password: compared in constant time, and a session remembers it so a changed password ends it. */
  passwordHash: Buffer;
}

export interface AdminCredentials {
  accounts: AdminAccount[];
  /** Why login is off, when it is (no password on a public interface). */
  loginDisabledReason: string | null;
}

export const ADMIN_CREDENTIALS = Symbol('ADMIN_CREDENTIALS');

export const ADMIN_USER = 'admin';
export const READONLY_USER = 'readonly';

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest();

export function sameSecret(candidate: string, hash: Buffer): boolean {
  return timingSafeEqual(sha256(candidate), hash);
}

export function fingerprint(hash: Buffer): string {
  return hash.subarray(0, 8).toString('hex');
}

/**
 * Admin credentials from the configuration:
 * - ADMIN_PASSWORD: user `admin` (every action). Unset on a loopback host, one is generated for
 *   this run and printed; unset on any other interface, login stays off.
 * - ADMIN_READONLY_PASSWORD: user `readonly` (every page, no action). Off when unset.
 * Scripts use API keys with the admin or readonly role instead (`npm run keys -- create --role admin`).
 */
export function loadAdminCredentials(
  config: Pick<AppConfig, 'host' | 'port' | 'adminPassword' | 'adminReadonlyPassword'>,
  logger = new Logger('AdminAuth'),
): AdminCredentials {
  const { host, port, adminReadonlyPassword } = config;
  const accounts: AdminAccount[] = [];
  let loginDisabledReason: string | null = null;
  let adminPassword = config.adminPassword ?? '';
  if (!adminPassword) {
    if (isLoopback(host)) {
      adminPassword = randomBytes(12).toString('base64url');
      logger.warn(`ADMIN_PASSWORD is not set; the dashboard password for this run is: ${adminPassword} (user "${ADMIN_USER}", http://${host.includes(':') ? `[${host}]` : host}:${port}/admin)`);
    } else {
      loginDisabledReason = `dashboard login is off: set ADMIN_PASSWORD (the gateway listens on ${host}, not loopback)`;
      logger.warn(loginDisabledReason);
    }
  } else if (adminPassword.length < 12) {
    logger.warn('ADMIN_PASSWORD is shorter than 12 characters');
  }
  if (adminPassword) accounts.push({ user: ADMIN_USER, role: 'admin', passwordHash: sha256(adminPassword) });
  // The configuration's schema already refused a read-only password equal to the admin one.
  if (adminReadonlyPassword) accounts.push({ user: READONLY_USER, role: 'readonly', passwordHash: sha256(adminReadonlyPassword) });
  return { accounts, loginDisabledReason };
}
