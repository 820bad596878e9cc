/**
 * Failures of a pull, turned into sentences that say what to do. Hub errors carry the status; the
 * hub's X-Error-Code header (GatedRepo, RepoNotFound, RevisionNotFound, EntryNotFound) is captured
 * by the fetch wrapper in pull.ts, since the client library drops response headers.
 */
import type { EngineSpec } from '@flexy/engines';
import { gatedSteps, repoPage } from './notices';

export interface HubResponseNote {
  status: number;
  url: string;
  errorCode?: string;
  errorMessage?: string;
}

export class PullError extends Error {
  constructor(
    message: string,
    readonly kind: 'access' | 'not-found' | 'integrity' | 'network' | 'refused' | 'usage',
    /** Further lines for the person at the terminal. */
    readonly help: string[] = [],
  ) {
    super(message);
  }
}

interface StatusError {
  statusCode?: number;
  message?: string;
}

/** Turns an error from the hub client into a PullError that explains itself, or null if it is not an HTTP refusal. */
export function explainHubError(
  error: unknown,
  spec: EngineSpec,
  context: { hubUrl: string; tokenSet: boolean; revision: string; note?: HubResponseNote },
): PullError | null {
  const status = (error as StatusError)?.statusCode ?? context.note?.status;
  if (status === undefined || status < 400) return null;
  const code = context.note?.errorCode;
  const hubSays = context.note?.errorMessage ?? (error as StatusError).message ?? '';
  const gated = code === 'GatedRepo' || /restricted|gated/i.test(hubSays);
  const page = repoPage(spec, context.hubUrl);

  if (gated && status === 401) {
    return new PullError(
      context.tokenSet
        ? `${spec.hubRepo} is gated and the hub did not accept HF_TOKEN (401): the token is invalid, expired or revoked.`
        : `${spec.hubRepo} is gated: the hub wants a token from an account that accepted its licence, and HF_TOKEN is not set (401).`,
      'access',
      gatedSteps(spec, context.hubUrl),
    );
  }
  if (gated && status === 403) {
    return new PullError(
      `${spec.hubRepo} is gated and the account behind HF_TOKEN has no access yet (403): its licence has not been accepted, or the request awaits approval.`,
      'access',
      [`  The hub says: ${hubSays.split('. URL:')[0]}`, ...gatedSteps(spec, context.hubUrl)],
    );
  }
  if (status === 401 && !gated) {
    return new PullError(
      context.tokenSet
        ? `The hub refused HF_TOKEN for ${spec.hubRepo} (401): the token is invalid or expired, or the repository does not exist.`
        : `The hub refused access to ${spec.hubRepo} (401): it is private, gated or missing; set HF_TOKEN to a token with access.`,
      'access',
      [`  Check ${page} and the token at ${context.hubUrl.replace(/\/+$/, '')}/settings/tokens`],
    );
  }
  if (status === 403) {
    return new PullError(`The hub forbids access to ${spec.hubRepo} (403): ${hubSays.split('. URL:')[0]}`, 'access', [
      `  Check ${page}`,
    ]);
  }
  if (status === 404) {
    const what =
      code === 'RevisionNotFound' || /revision|invalid rev/i.test(hubSays)
        ? `revision ${context.revision} of ${spec.hubRepo} does not exist on the hub`
        : code === 'EntryNotFound'
          ? `a file listed at ${context.revision} is missing from ${spec.hubRepo}`
          : `${spec.hubRepo} was not found on the hub`;
    return new PullError(`Not found (404): ${what}.`, 'not-found', [`  Check ${page}`]);
  }
  return null;
}
