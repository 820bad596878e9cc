import type { PhaseName, PhaseTiming } from '../admin.dto';
import { html, type SafeHtml } from './html';

export function fmtCount(n: number): string {
  return n.toLocaleString('en-US');
}

export function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60_000);
  if (m < 60) return `${m} min ${Math.round((ms % 60_000) / 1000)} s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h} h ${m % 60} min` : `${Math.floor(h / 24)} d ${h % 24} h`;
}

export function fmtBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

/** Times are shown in UTC, the one zone every operator's screen agrees on. */
export function fmtTime(value: string | number | Date | null | undefined): SafeHtml {
  if (value === null || value === undefined) return html`–`;
  const d = new Date(value);
  return html`<time datetime="${d.toISOString()}">${d.toISOString().replace('T', ' ').slice(0, 19)} UTC</time>`;
}

export const PHASE_LABELS: Record<PhaseName, string> = {
  queue_wait: 'queue wait',
  load: 'load',
  text_encode: 'text encode',
  denoise: 'denoise',
  decode: 'decode',
  encode_store: 'encode + store',
  other: 'other',
};

/**
 * A horizontal bar of a job's phases. `scaleMs` is the duration the full width stands for, so
 * bars drawn with the same scale (one sandbox run) compare by length. SVG geometry needs no inline
 * styles, which keeps the page's content security policy strict.
 */
export function phaseBar(phases: PhaseTiming[], scaleMs: number, label: string): SafeHtml {
  const total = phases.reduce((sum, p) => sum + p.ms, 0);
  const width = 1000;
  let x = 0;
  const rects = phases
    .filter((p) => p.ms > 0)
    .map((p) => {
      const w = scaleMs > 0 ? (p.ms / scaleMs) * width : 0;
      const rect = html`<rect class="ph ph-${p.phase}" x="${x.toFixed(1)}" y="0" width="${Math.max(w, 1).toFixed(1)}" height="20"><title>${PHASE_LABELS[p.phase]}: ${fmtMs(p.ms)}</title></rect>`;
      x += w;
      return rect;
    });
  return html`<figure class="phasebar" data-total-ms="${total}">
    <svg viewBox="0 0 ${width} 20" preserveAspectRatio="none" role="img" aria-label="${label}: ${fmtMs(total)} in total">${rects}</svg>
    <figcaption>${phases
      .filter((p) => p.ms > 0)
      .map((p) => html`<span class="legend"><i class="swatch ph-${p.phase}"></i>${PHASE_LABELS[p.phase]} ${fmtMs(p.ms)}</span>`)}</figcaption>
  </figure>`;
}

export function statusBadge(status: string): SafeHtml {
  return html`<span class="badge st-${status}" data-status="${status}">${status}</span>`;
}

/** A small bar chart of counts (completions per five minutes), oldest first. */
export function sparkline(values: number[], label: string): SafeHtml {
  const max = Math.max(1, ...values);
  const w = 10;
  const bars = values.map((v, i) => {
    const h = (v / max) * 30;
    return html`<rect x="${i * w + 1}" y="${(30 - h).toFixed(1)}" width="${w - 2}" height="${Math.max(h, v > 0 ? 1 : 0).toFixed(1)}"><title>${v}</title></rect>`;
  });
  return html`<svg class="sparkline" viewBox="0 0 ${values.length * w} 30" role="img" aria-label="${label}">${bars}</svg>`;
}
