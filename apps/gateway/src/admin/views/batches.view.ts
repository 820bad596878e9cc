import type { BatchDetail, BatchSummary } from '../admin.dto';
import { fmtCount, fmtTime, statusBadge } from './format';
import { html, nothing, type SafeHtml } from './html';
import { jobRows } from './jobs.view';
import { actionButton, type PageContext } from './layout';

function progress(b: BatchSummary): SafeHtml {
  const done = b.counts.succeeded + b.counts.failed + b.counts.cancelled;
  return html`<progress value="${done}" max="${Math.max(b.itemCount, 1)}"></progress>
    <span class="steps">${fmtCount(done)}/${fmtCount(b.itemCount)}</span>
    <span class="muted">${b.counts.succeeded} ok · ${b.counts.failed} failed · ${b.counts.cancelled} cancelled · ${b.counts.running} running · ${b.counts.queued} queued</span>`;
}

export function batchesLive(batches: BatchSummary[]): SafeHtml {
  if (!batches.length) return html`<p class="empty">No batch yet.</p>`;
  return html`<table class="batches">
    <thead><tr><th>batch</th><th>status</th><th>progress</th><th>created</th><th>finished</th></tr></thead>
    <tbody>${batches.map(
      (b) => html`<tr data-batch-id="${b.id}">
        <td><a href="/admin/batches/${b.id}" class="mono">${b.id}</a></td>
        <td>${statusBadge(b.status)}</td>
        <td>${progress(b)}</td>
        <td>${fmtTime(b.createdAt)}</td>
        <td>${fmtTime(b.finishedAt ?? b.cancelledAt)}</td>
      </tr>`,
    )}</tbody>
  </table>`;
}

export function batchLive(ctx: PageContext, b: BatchDetail): SafeHtml {
  const open = b.status === 'queued' || b.status === 'running';
  return html`<p class="status-line">${statusBadge(b.status)} ${progress(b)}
    <span class="actions">${open ? actionButton(ctx, `/admin/api/batches/${b.id}/cancel`, 'Cancel batch', { danger: true, name: 'cancel-batch', confirm: 'Cancel every unfinished item of this batch?' }) : nothing}</span></p>
  <table class="jobs">
    <thead><tr><th>generation</th><th>status</th><th>engine</th><th>prompt</th><th>origin</th><th>API key</th><th>created</th><th>total</th></tr></thead>
    <tbody>${jobRows(b.items)}</tbody>
  </table>
  ${b.items.length < b.itemCount ? html`<p class="hint">Showing the first ${b.items.length} items.</p>` : nothing}`;
}
