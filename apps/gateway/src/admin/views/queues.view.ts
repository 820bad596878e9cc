import { JobName } from '@flexy/contracts';
import { QUEUE_JOB_STATES, type QueueJobPage, type QueueJobRow, type QueueSummary } from '../admin.dto';
import { fmtCount, fmtMs, fmtTime, sparkline } from './format';
import { html, nothing, type SafeHtml } from './html';
import { actionButton, type PageContext } from './layout';

function jobActions(ctx: PageContext, queue: string, job: QueueJobRow): SafeHtml {
  const isGeneration = job.name === JobName.Generate;
  if (job.state === 'completed' || job.state === 'failed') {
    return actionButton(ctx, `/admin/api/queues/${queue}/jobs/${job.id}/remove`, 'Remove', { name: 'remove' });
  }
  // Unfinished generations are cancelled, so their records close as well.
  return isGeneration ? actionButton(ctx, `/admin/api/jobs/${job.id}/cancel`, 'Cancel', { danger: true, name: 'cancel' }) : nothing;
}

function jobTable(ctx: PageContext, page: QueueJobPage): SafeHtml {
  if (!page.jobs.length) return html`<p class="empty">No ${page.state} jobs.</p>`;
  const rows = page.jobs.map(
    (j) => html`<tr data-job-id="${j.id}" data-state="${j.state}">
      <td><a href="/admin/jobs/${j.id}" class="mono">${j.id}</a></td>
      <td>${j.engine ?? j.name}</td>
      <td class="prompt" title="${j.prompt ?? ''}">${j.prompt ?? ''}</td>
      <td>${j.origin ?? ''}</td>
      <td>${fmtTime(j.addedAt)}</td>
      <td>${
        j.progress
          ? html`<progress value="${j.progress.step}" max="${j.progress.totalSteps}"></progress> <span class="steps">${j.progress.step}/${j.progress.totalSteps}</span>`
          : j.finishedAt
            ? fmtMs(j.finishedAt - (j.processedAt ?? j.addedAt))
            : ''
      }</td>
      <td>${j.attemptsMade}</td>
      <td class="error-cell">${j.failedReason ?? ''}</td>
      <td>${jobActions(ctx, page.queue, j)}</td>
    </tr>`,
  );
  const pages = Math.max(1, Math.ceil(page.total / page.pageSize));
  const link = (p: number, label: string) => html`<a href="?state=${page.state}&page=${p}">${label}</a>`;
  return html`<table class="jobs">
    <thead><tr><th>job</th><th>engine</th><th>prompt</th><th>origin</th><th>added</th><th>progress / took</th><th>attempts</th><th>error</th><th></th></tr></thead>
    <tbody>${rows}</tbody>
  </table>
  <nav class="pager">${page.page > 1 ? link(page.page - 1, '← newer') : nothing}
    <span>page ${page.page} of ${fmtCount(pages)}</span>
    ${page.page < pages ? link(page.page + 1, 'older →') : nothing}</nav>`;
}

export function queuesLive(ctx: PageContext, summaries: QueueSummary[], pages: Map<string, QueueJobPage>): SafeHtml {
  return html`${summaries.map((q) => {
    const page = pages.get(q.name)!;
    const tiles = QUEUE_JOB_STATES.map(
      (state) => html`<a class="tile${page.state === state ? ' current' : ''}" href="?state=${state}" data-state="${state}">
        <span class="n" data-count="${state}">${fmtCount(q.counts[state])}</span><span class="label">${state}</span></a>`,
    );
    return html`<section class="queue" data-queue="${q.name}" data-paused="${String(q.paused)}">
      <header class="queue-head">
        <h2>${q.name}</h2>
        ${q.paused ? html`<span class="badge st-paused" data-queue-state>paused</span>` : html`<span class="badge st-running" data-queue-state>running</span>`}
        <span class="actions">
          ${q.paused
            ? actionButton(ctx, `/admin/api/queues/${q.name}/resume`, 'Resume', { name: 'resume' })
            : actionButton(ctx, `/admin/api/queues/${q.name}/pause`, 'Pause', { name: 'pause' })}
          ${actionButton(ctx, `/admin/api/queues/${q.name}/retry-failed`, 'Retry failed', { name: 'retry-failed' })}
        </span>
      </header>
      <div class="tiles">${tiles}</div>
      <dl class="facts">
        <div><dt>finished in the last hour</dt><dd><span data-fact="completed-last-hour">${fmtCount(q.lastHour.completed)}</span> completed · <span data-fact="failed-last-hour">${fmtCount(q.lastHour.failed)}</span> failed ${sparkline(q.lastHour.perFiveMinutes, 'completed per five minutes over the last hour')}</dd></div>
        <div><dt>oldest waiting</dt><dd data-fact="oldest-waiting">${q.oldestWaiting ? html`${fmtMs(q.oldestWaiting.ageMs)} (<a href="/admin/jobs/${q.oldestWaiting.jobId}" class="mono">${q.oldestWaiting.jobId}</a>)` : 'none'}</dd></div>
      </dl>
      <h3>${page.state} jobs <span class="count">(${fmtCount(page.total)})</span></h3>
      ${jobTable(ctx, page)}
    </section>`;
  })}`;
}

export function queuesMaintenance(ctx: PageContext, queues: string[]): SafeHtml {
  if (ctx.principal.role !== 'admin') return nothing;
  return html`<section class="maintenance"><h2>Clean</h2>
    <p class="hint">Removes finished jobs from the queue; their generation records stay in the database.</p>
    ${queues.map(
      (q) => html`<form method="post" action="/admin/api/queues/${q}/clean" class="row" data-confirm="Remove these jobs from queue ${q}?">
        <input type="hidden" name="_csrf" value="${ctx.principal.csrfToken ?? ''}">
        <strong>${q}</strong>
        <label>state <select name="state"><option value="completed">completed</option><option value="failed">failed</option></select></label>
        <label>finished at least <input type="number" name="olderThanMinutes" value="60" min="0" max="43200" required> minutes ago</label>
        <button type="submit" class="danger" data-action="clean">Clean</button>
      </form>`,
    )}
  </section>`;
}
