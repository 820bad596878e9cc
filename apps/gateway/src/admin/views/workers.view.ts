import type { WorkerView } from '../admin.dto';
import { fmtBytes, fmtMs } from './format';
import { html, nothing, type SafeHtml } from './html';

function memory(w: WorkerView): SafeHtml {
  if (!w.memory) return html`<span class="muted">no report yet</span>`;
  const { usedBytes, budgetBytes } = w.memory;
  if (budgetBytes <= 0) return html`${fmtBytes(usedBytes)} <span class="muted">(no device budget)</span>`;
  return html`<meter value="${usedBytes}" min="0" max="${budgetBytes}" high="${budgetBytes * 0.9}"></meter>
    <span data-memory>${fmtBytes(usedBytes)} of ${fmtBytes(budgetBytes)}</span>`;
}

function currentJob(w: WorkerView, now: number): SafeHtml {
  const j = w.currentJob;
  if (!j) return html`<span class="muted">idle</span>`;
  const label = j.canary ? html`canary on ${j.engine}` : html`<a href="/admin/jobs/${j.id}" class="mono">${j.id}</a> ${j.engine}`;
  return html`<div class="current-job" data-current-job="${j.id}">${label}
    <div><progress value="${j.step}" max="${j.totalSteps}"></progress> <span class="steps" data-steps>step ${j.step}/${j.totalSteps}</span>
    <span class="muted">${fmtMs(Math.floor((now - j.startedAt) / 1000) * 1000)}</span></div></div>`;
}

function engines(w: WorkerView): SafeHtml {
  if (!w.engines.length) return html`<span class="muted">none</span>`;
  return html`<ul class="engines">${w.engines.map(
    (e) => html`<li data-engine="${e.engine}" data-engine-state="${e.state}"${e.residentOn ? html` data-resident="${e.residentOn}"` : nothing}>
      <span class="mono">${e.engine}</span> <span class="badge w-${e.weights}">${e.weights}</span>
      ${e.state === 'unavailable'
        ? html`<span class="badge unavailable">unavailable</span> <span class="engine-reason" data-engine-reason>${e.reason ?? ''}${e.retryAt ? html` <span class="muted">(tried again at ${new Date(e.retryAt).toISOString().slice(11, 19)} UTC)</span>` : nothing}</span>`
        : e.residentOn ? html`<span class="badge resident">on ${e.residentOn} · ${fmtBytes(e.bytes)}</span>` : html`<span class="muted">not loaded</span>`}
    </li>`,
  )}</ul>`;
}

export function workersLive(workers: WorkerView[], now: number): SafeHtml {
  if (!workers.length) {
    return html`<p class="empty">No worker has reported. Supervisors publish each worker's status every 2 s; none is running, or none can reach this Redis.</p>`;
  }
  const hosts = [...new Set(workers.map((w) => w.host))];
  return html`${hosts.map(
    (host) => html`<section class="host" data-host="${host}"><h2>${host}</h2>
    <table class="workers">
      <thead><tr><th>device</th><th>state</th><th>pid</th><th>current job</th><th>engines</th><th>memory vs budget</th><th>restarts</th><th>last error</th></tr></thead>
      <tbody>${workers
        .filter((w) => w.host === host)
        .map(
          (w) => html`<tr data-worker-id="${w.id}" data-state="${w.state}">
          <td class="mono">${w.device}</td>
          <td><span class="badge ws-${w.state}" data-worker-state>${w.state}</span>${w.stale ? html` <span class="badge stale" title="no report for over 6 s">stale</span>` : nothing}</td>
          <td class="mono" data-pid="${w.pid ?? ''}">${w.pid ?? '–'}</td>
          <td>${currentJob(w, now)}</td>
          <td>${engines(w)}</td>
          <td>${memory(w)}</td>
          <td data-restarts="${w.restarts}">${w.restarts}</td>
          <td class="error-cell">${w.lastError ?? ''}</td>
        </tr>`,
        )}</tbody>
    </table></section>`,
  )}`;
}
