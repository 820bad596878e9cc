import type { AdminPrincipal } from '../admin.dto';
import { html, nothing, type SafeHtml } from './html';

export type NavKey = 'queues' | 'workers' | 'jobs' | 'sandbox' | 'batches';

export interface PageContext {
  principal: AdminPrincipal;
  /** Batches appear in the navigation once there is at least one. */
  hasBatches: boolean;
  /** Some worker serves demo snapshots: images are noise, and the page says so. */
  demoWeights: boolean;
  /** Query string of the asset URLs, changed whenever their content does. */
  assetVersion: string;
}

export interface PageSpec {
  title: string;
  nav: NavKey | null;
  /** Controls outside the live region (forms a refresh must not reset). */
  top?: SafeHtml;
  live: SafeHtml;
  bottom?: SafeHtml;
}

const NAV: Array<{ key: NavKey; label: string; href: string }> = [
  { key: 'queues', label: 'Queues', href: '/admin/queues' },
  { key: 'workers', label: 'Workers', href: '/admin/workers' },
  { key: 'jobs', label: 'Jobs', href: '/admin/jobs' },
  { key: 'sandbox', label: 'Sandbox', href: '/admin/sandbox' },
  { key: 'batches', label: 'Batches', href: '/admin/batches' },
];

export function document(title: string, assetVersion: string, body: SafeHtml, csrfToken: string | null = null): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · FlexyFace admin</title>
${csrfToken ? html`<meta name="csrf-token" content="${csrfToken}">` : nothing}
<link rel="stylesheet" href="/admin/assets/admin.css?v=${assetVersion}">
<script src="/admin/assets/admin.js?v=${assetVersion}" defer></script>
</head>
<body>
${body}
</body>
</html>`.value;
}

export function page(ctx: PageContext, spec: PageSpec): string {
  const { principal } = ctx;
  const links = NAV.filter((n) => n.key !== 'batches' || ctx.hasBatches || spec.nav === 'batches').map(
    (n) => html`<a href="${n.href}"${spec.nav === n.key ? html` aria-current="page"` : nothing}>${n.label}</a>`,
  );
  const logout =
    principal.via === 'session'
      ? html`<form method="post" action="/admin/logout" class="inline"><input type="hidden" name="_csrf" value="${principal.csrfToken}"><button type="submit" class="link">Log out</button></form>`
      : nothing;
  const body = html`<header class="top">
  <a class="brand" href="/admin">FlexyFace <span>admin</span></a>
  <nav>${links}</nav>
  <span class="who" data-role="${principal.role}">${principal.user}${principal.role === 'readonly' ? html` <span class="badge">read-only</span>` : nothing}</span>
  ${logout}
</header>
${ctx.demoWeights ? html`<p class="notice demo">Demo snapshots: the workers serve tiny random-weight models, so every image is noise. Timings show the real orchestration path.</p>` : nothing}
<div id="flash" role="status" aria-live="polite"></div>
<main>
<h1>${spec.title}</h1>
${spec.top ?? nothing}
<div id="live" data-live>${spec.live}</div>
${spec.bottom ?? nothing}
</main>`;
  return document(spec.title, ctx.assetVersion, body, principal.csrfToken);
}

/**
 * A button that performs one action. It is a real form (works without scripts, the token travels as
 * _csrf); the page script sends it with fetch and the token in X-CSRF-Token instead.
 */
export function actionButton(
  ctx: PageContext,
  action: string,
  label: string,
  options: { fields?: Record<string, string | number>; danger?: boolean; confirm?: string; name?: string } = {},
): SafeHtml {
  const readonly = ctx.principal.role !== 'admin';
  const fields = Object.entries(options.fields ?? {}).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`);
  return html`<form method="post" action="${action}" class="inline action"${options.confirm ? html` data-confirm="${options.confirm}"` : nothing}>
    ${ctx.principal.csrfToken ? html`<input type="hidden" name="_csrf" value="${ctx.principal.csrfToken}">` : nothing}${fields}
    <button type="submit"${options.danger ? html` class="danger"` : nothing}${readonly ? html` disabled title="read-only role"` : nothing}${options.name ? html` data-action="${options.name}"` : nothing}>${label}</button>
  </form>`;
}

export function errorPage(assetVersion: string, status: number, message: string): string {
  return document(
    `Error ${status}`,
    assetVersion,
    html`<header class="top"><a class="brand" href="/admin">FlexyFace <span>admin</span></a></header>
<main class="narrow"><h1>Error ${status}</h1><p class="error" data-error-status="${status}">${message}</p><p><a href="/admin">Back to the dashboard</a></p></main>`,
  );
}
