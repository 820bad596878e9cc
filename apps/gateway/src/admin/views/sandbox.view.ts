import { ENGINE_CATALOG, ENGINE_IDS } from '@flexy/engines';
import type { SandboxRunDetail, SandboxRunPage } from '../admin.dto';
import { fmtMs, fmtTime, phaseBar, statusBadge } from './format';
import { html, nothing, type SafeHtml } from './html';
import type { PageContext } from './layout';

export function sandboxForm(ctx: PageContext): SafeHtml {
  if (ctx.principal.role !== 'admin') return html`<p class="hint">The read-only role can browse runs but not start one.</p>`;
  return html`<form method="post" action="/admin/api/sandbox-runs" class="sandbox-form">
    <input type="hidden" name="_csrf" value="${ctx.principal.csrfToken ?? ''}">
    <label class="wide">prompt <textarea name="prompt" rows="2" required maxlength="4000" placeholder="a lighthouse at dawn, oil painting"></textarea></label>
    <fieldset><legend>engines</legend>${ENGINE_IDS.map(
      (e) => html`<label class="check"><input type="checkbox" name="engines" value="${e}" checked> ${ENGINE_CATALOG[e].label}</label>`,
    )}</fieldset>
    <div class="row">
      <label>seed <input type="number" name="seed" min="0" max="4294967295" placeholder="random"></label>
      <label>steps <input type="number" name="steps" min="1" max="100" placeholder="engine default"></label>
      <label>guidance <input type="number" name="guidance" step="0.1" placeholder="engine default"></label>
      <label>width <input type="number" name="width" step="8" placeholder="engine default"></label>
      <label>height <input type="number" name="height" step="8" placeholder="engine default"></label>
    </div>
    <p class="hint">Every engine runs the same prompt, seed and settings; one whose limits refuse a setting is shown as skipped.</p>
    <button type="submit" data-action="run-sandbox">Run comparison</button>
  </form>`;
}

export function sandboxRunsLive(page: SandboxRunPage): SafeHtml {
  if (!page.items.length) return html`<p class="empty">No sandbox run yet.</p>`;
  return html`<h2>Past runs</h2>
  <table class="runs">
    <thead><tr><th>run</th><th>status</th><th>prompt</th><th>engines</th><th>started</th><th>finished</th></tr></thead>
    <tbody>${page.items.map(
      (r) => html`<tr data-run-id="${r.id}">
        <td><a href="/admin/sandbox/${r.id}" class="mono">${r.id}</a></td>
        <td>${statusBadge(r.status)}</td>
        <td class="prompt" title="${r.prompt}">${r.prompt}</td>
        <td>${r.engines.join(', ')}</td>
        <td>${fmtTime(r.createdAt)}</td>
        <td>${fmtTime(r.finishedAt)}</td>
      </tr>`,
    )}</tbody>
  </table>
  ${page.older ? html`<nav class="pager"><a href="/admin/sandbox">⇤ newest</a> <a href="?older=${page.older}" rel="next">older →</a></nav>` : nothing}`;
}

export function sandboxRunLive(run: SandboxRunDetail): SafeHtml {
  // One scale for every engine of the run, so the bars compare by length.
  const scale = Math.max(1, ...run.results.map((r) => r.phases.reduce((s, p) => s + p.ms, 0)));
  return html`<p class="status-line">${statusBadge(run.status)} seed <span class="mono">${run.seed}</span> · started ${fmtTime(run.createdAt)}</p>
  <p class="prompt-full">${run.prompt}</p>
  <div class="comparison" data-run-id="${run.id}">${run.results.map(
    (r) => html`<article class="engine-result" data-engine="${r.engine}" data-status="${r.status}">
      <h2>${ENGINE_CATALOG[r.engine as keyof typeof ENGINE_CATALOG]?.label ?? r.engine} <span class="mono muted">${r.engine}</span></h2>
      <div class="frame">${
        r.imageUrl
          ? html`<a href="${r.imageUrl}"><img class="result" src="${r.imageUrl}" alt="${r.engine} result"></a>`
          : r.progress
            ? html`<div class="placeholder"><progress value="${r.progress.step}" max="${r.progress.totalSteps}"></progress><span class="steps">step ${r.progress.step}/${r.progress.totalSteps}</span></div>`
            : html`<div class="placeholder">${r.status}</div>`
      }</div>
      <p>${statusBadge(r.status)} ${r.weights ? html`<span class="badge w-${r.weights}">${r.weights} weights</span>` : nothing}
        ${r.totalMs !== null ? html`<strong data-latency>${fmtMs(r.totalMs)}</strong>` : nothing}
        ${r.generationId ? html`<a href="/admin/jobs/${r.generationId}" class="mono small">${r.generationId}</a>` : nothing}</p>
      ${r.phases.length ? phaseBar(r.phases, scale, `${r.engine} phases`) : nothing}
      ${r.error ? html`<p class="error"><strong>${r.error.code}</strong>${r.error.field ? html` (field ${r.error.field})` : nothing}: ${r.error.message ?? ''}</p>` : nothing}
    </article>`,
  )}</div>`;
}
