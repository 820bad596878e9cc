import { ENGINE_IDS } from '@flexy/engines';
import { JOB_STATUSES, type JobDetail, type JobListItem, type JobListPage, type JobSearchQueryDto } from '../admin.dto';
import { fmtMs, fmtTime, phaseBar, statusBadge } from './format';
import { html, nothing, type SafeHtml } from './html';
import { actionButton, type PageContext } from './layout';

const FILTER_KEYS = ['q', 'engine', 'status', 'api_key', 'from', 'to'] as const;

function queryString(query: JobSearchQueryDto, extra: Record<string, string>): string {
  const params = new URLSearchParams();
  for (const key of FILTER_KEYS) if (query[key]) params.set(key, String(query[key]));
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return `?${params.toString()}`;
}

export function jobRows(items: JobListItem[]): SafeHtml {
  return html`${items.map(
    (j) => html`<tr data-job-id="${j.id}" data-status="${j.status}">
      <td><a href="/admin/jobs/${j.id}" class="mono">${j.id}</a></td>
      <td>${statusBadge(j.status)}</td>
      <td>${j.engine}</td>
      <td class="prompt" title="${j.prompt}">${j.prompt}</td>
      <td>${j.origin}</td>
      <td>${j.apiKey ? html`<span class="mono" title="${j.apiKey.name}">${j.apiKey.prefix}</span>` : html`<span class="muted">none</span>`}</td>
      <td>${fmtTime(j.createdAt)}</td>
      <td>${fmtMs(j.totalMs)}</td>
    </tr>`,
  )}`;
}

export function jobsSearchForm(query: JobSearchQueryDto): SafeHtml {
  const option = (value: string, current: string | undefined) => html`<option value="${value}"${value === current ? html` selected` : nothing}>${value}</option>`;
  return html`<form method="get" action="/admin/jobs" class="search" role="search">
    <label>search <input type="search" name="q" value="${query.q ?? ''}" placeholder="generation id or prompt words"></label>
    <label>engine <select name="engine"><option value="">any</option>${ENGINE_IDS.map((e) => option(e, query.engine))}</select></label>
    <label>status <select name="status"><option value="">any</option>${JOB_STATUSES.map((s) => option(s, query.status))}</select></label>
    <label>API key <input type="text" name="api_key" value="${query.api_key ?? ''}" placeholder="id or prefix" size="12"></label>
    <label>from (UTC) <input type="datetime-local" name="from" value="${query.from ?? ''}"></label>
    <label>to (UTC) <input type="datetime-local" name="to" value="${query.to ?? ''}"></label>
    <button type="submit">Search</button>
    <a href="/admin/jobs">clear</a>
  </form>`;
}

export function jobsLive(query: JobSearchQueryDto, page: JobListPage): SafeHtml {
  if (!page.items.length) return html`<p class="empty">No generation matches.</p>`;
  return html`<table class="jobs">
    <thead><tr><th>generation</th><th>status</th><th>engine</th><th>prompt</th><th>origin</th><th>API key</th><th>created</th><th>total</th></tr></thead>
    <tbody>${jobRows(page.items)}</tbody>
  </table>
  <nav class="pager">
    ${page.newer ? html`<a href="${queryString(query, {})}">⇤ newest</a> <a href="${queryString(query, { newer: page.newer })}" rel="prev">← newer</a>` : nothing}
    ${page.older ? html`<a href="${queryString(query, { older: page.older })}" rel="next">older →</a>` : nothing}
  </nav>`;
}

export function jobLive(ctx: PageContext, j: JobDetail): SafeHtml {
  const p = j.parameters;
  const total = j.phases.reduce((s, x) => s + x.ms, 0);
  const progress = j.queue?.progress;
  return html`<section class="job" data-job-id="${j.id}" data-status="${j.status}">
    <p class="status-line">${statusBadge(j.status)}
      ${j.status === 'running' && progress ? html`<progress value="${progress.step}" max="${progress.totalSteps}"></progress> <span class="steps">step ${progress.step}/${progress.totalSteps}</span>` : nothing}
      ${j.queue ? html`<span class="muted">queue: ${j.queue.state}, attempts ${j.queue.attemptsMade}</span>` : nothing}
      <span class="actions">
        ${j.cancellable ? actionButton(ctx, `/admin/api/jobs/${j.id}/cancel`, 'Cancel', { danger: true, name: 'cancel' }) : nothing}
        ${j.retryable ? actionButton(ctx, `/admin/api/jobs/${j.id}/retry`, 'Retry', { name: 'retry' }) : nothing}
      </span>
    </p>
    <div class="job-grid">
      <div>
        <h2>Parameters</h2>
        <dl class="params">
          <dt>engine</dt><dd>${j.engine}</dd>
          <dt>prompt</dt><dd class="prompt-full">${j.prompt}</dd>
          ${j.negativePrompt ? html`<dt>negative prompt</dt><dd>${j.negativePrompt}</dd>` : nothing}
          <dt>seed</dt><dd class="mono">${p.seed}</dd>
          <dt>steps</dt><dd>${p.steps}</dd>
          <dt>guidance</dt><dd>${p.guidance}</dd>
          <dt>size</dt><dd>${p.width}×${p.height}${p.numImages > 1 ? html` × ${p.numImages} images` : nothing}</dd>
          <dt>origin</dt><dd>${j.origin}${j.sandboxRunId ? html` (<a href="/admin/sandbox/${j.sandboxRunId}">sandbox run</a>)` : nothing}${j.batchId ? html` (<a href="/admin/batches/${j.batchId}">batch</a>)` : nothing}</dd>
          <dt>API key</dt><dd>${j.apiKey ? html`<span class="mono">${j.apiKey.prefix}</span> ${j.apiKey.name}` : 'none'}</dd>
          <dt>weights</dt><dd>${j.weights ?? '–'}${j.modelRevision ? html` <span class="mono">${j.modelRevision}</span>` : nothing}</dd>
          <dt>worker</dt><dd class="mono">${j.workerId ?? '–'}</dd>
          <dt>attempts</dt><dd>${j.attempts}</dd>
          <dt>created</dt><dd>${fmtTime(j.createdAt)}</dd>
          <dt>started</dt><dd>${fmtTime(j.startedAt)}</dd>
          <dt>finished</dt><dd>${fmtTime(j.finishedAt)}</dd>
        </dl>
      </div>
      <div>
        <h2>Timings</h2>
        ${j.phases.length ? html`${phaseBar(j.phases, total, 'phases')}<p>total <strong data-total>${fmtMs(j.totalMs ?? total)}</strong></p>` : html`<p class="muted">No timings yet.</p>`}
        ${j.error ? html`<h2>Error</h2><p class="error" data-error-code="${j.error.code}"><strong>${j.error.code}</strong>${j.error.field ? html` (field ${j.error.field})` : nothing}: ${j.error.message ?? ''}</p>` : nothing}
        ${j.images.length
          ? html`<h2>Image${j.images.length > 1 ? 's' : ''}</h2>${j.images.map(
              (img) => html`<a href="${img.url}"><img class="result" src="${img.url}" width="${img.width}" height="${img.height}" alt="generated image ${img.index}"></a>`,
            )}`
          : nothing}
      </div>
    </div>
  </section>`;
}
