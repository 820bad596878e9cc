import { ForbiddenException } from '@nestjs/common';
import { everyOwner, ownerOf, type ApiKey, type OwnerScope } from '@flexy/persistence';

export type PrincipalRole = 'user' | 'admin' | 'readonly';

/**
 * Who is asking: an API key, the anonymous owner (open mode, loopback only), or a dashboard session.
 * Everything a principal creates belongs to its key (null: the anonymous owner); other owners get 404
 * for it, admins see every owner's.
 */
export interface Principal {
  apiKey: ApiKey | null;
  role: PrincipalRole;
}

/** The principal of an API call: its key's role, or an anonymous user in open mode. */
export function principalOf(apiKey: ApiKey | null): Principal {
  return { apiKey, role: apiKey?.role ?? 'user' };
}

/** A dashboard session signed in with a password (no key): it sees every owner's work. */
export const dashboardPrincipal = (role: 'admin' | 'readonly'): Principal => ({ apiKey: null, role });

/** Whose records this principal may see. */
export function scopeOf(principal: Principal): OwnerScope {
  return principal.role === 'admin' ? everyOwner : ownerOf(principal.apiKey?.id ?? null);
}

/** The owner recorded on what this principal creates. */
export const ownerIdOf = (principal: Principal): string | null => principal.apiKey?.id ?? null;

/** Read-only principals read; every write (create, cancel, delete) is refused with 403. */
export function assertMayWrite(principal: Principal): void {
  if (principal.role === 'readonly') throw new ForbiddenException('this API key is read-only');
}
