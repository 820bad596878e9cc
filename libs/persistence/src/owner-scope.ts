/**
 * Whose records a query may see: one owner's (an API key's, or the anonymous owner of open mode,
 * whose key id is null), or every owner's (admin keys and the dashboard).
 */
export type OwnerScope = { kind: 'owner'; apiKeyId: string | null } | { kind: 'all' };

export const everyOwner: OwnerScope = { kind: 'all' };
export const ownerOf = (apiKeyId: string | null): OwnerScope => ({ kind: 'owner', apiKeyId });

/** The Prisma condition for a scope (an empty one for every owner). */
export function ownerWhere(scope: OwnerScope): { apiKeyId?: string | null } {
  return scope.kind === 'all' ? {} : { apiKeyId: scope.apiKeyId };
}

export class InvalidCursorError extends Error {
  constructor() {
    super('invalid pagination cursor');
  }
}

/** Keyset cursors over (createdAt, id), newest first: stable under inserts, the same cost at any depth. */
export function encodeCursor(row: { createdAt: Date; id: string }): string {
  return Buffer.from(JSON.stringify([row.createdAt.getTime(), row.id])).toString('base64url');
}

/**
 * The rows after `cursor` in newest-first order, (createdAt, id) < the cursor's, as a Prisma condition.
 * The plain upper bound on createdAt is what lets SQLite and PostgreSQL seek to the cursor in the
 * (…, createdAt, id) indexes; the OR of the two cases alone makes both walk every newer row first, a
 * cost that grows with the page's depth.
 */
export function afterCursor(cursor: string) {
  const after = decodeCursor(cursor);
  return { createdAt: { lte: after.createdAt }, OR: [{ createdAt: { lt: after.createdAt } }, { id: { lt: after.id } }] };
}

export function decodeCursor(cursor: string): { createdAt: Date; id: string } {
  try {
    const [time, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    if (typeof time === 'number' && Number.isFinite(time) && typeof id === 'string') return { createdAt: new Date(time), id };
  } catch {
    // Falls through to the error below.
  }
  throw new InvalidCursorError();
}
