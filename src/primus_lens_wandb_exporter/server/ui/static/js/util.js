// Small DOM and formatting helpers shared by the views.

export function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

/** Epoch in ms (or s, for values that are clearly seconds) -> Date, or null. */
export function toDate(value) {
  if (value === null || value === undefined || value === '') return null;
  if (typeof value === 'string' && !/^[0-9.]+$/.test(value)) {
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) return null;
  return new Date(n < 1e11 ? n * 1000 : n);
}

export function formatTime(value) {
  const d = toDate(value);
  if (!d) return '—';
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

export function formatAgo(value, now = Date.now()) {
  const d = toDate(value);
  if (!d) return '—';
  const s = Math.max(0, Math.round((now - d.getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function formatCount(n) {
  if (n === null || n === undefined) return '—';
  return Number(n).toLocaleString('en-US');
}

export function countOf(value) {
  if (Array.isArray(value)) return value.length;
  return value ?? 0;
}

export function frameworkLabel(wrapper, base) {
  if (wrapper && base && wrapper !== base) return `${wrapper} / ${base}`;
  return wrapper || base || '';
}

/** Detection badge. A detection that found no framework at all (a plain wandb script: only
 * wandb was seen) is not an error: a neutral "W&B only" instead of "heuristic 0%". */
export function methodBadge(method, confidence, wrapper = undefined, base = undefined) {
  if (method && wrapper !== undefined && !wrapper && !base) {
    return '<span class="badge muted wandb-only" title="Only wandb was seen: no training framework (Lightning, Transformers, DeepSpeed, …) was detected in this workload">W&amp;B only</span>';
  }
  if (!method) return '<span class="badge muted" title="no framework detection reported yet">not detected</span>';
  const pct = confidence === null || confidence === undefined ? '' : ` ${Math.round(Number(confidence) * 100)}%`;
  const cls = method === 'exact' ? 'exact' : 'heuristic';
  const title = method === 'exact'
    ? 'claimed by the framework adapter that was called by the framework'
    : 'inferred from imported modules, environment variables or config keys';
  return `<span class="badge ${cls}" title="${esc(title)}">${esc(method)}${esc(pct)}</span>`;
}

export function statusBadge(status) {
  const live = status === 'live';
  return `<span class="badge status ${live ? 'live' : 'finished'}" data-status="${esc(status || '')}">${live ? '● live' : esc(status || 'unknown')}</span>`;
}

export function json(value) {
  return esc(JSON.stringify(value ?? null, null, 2));
}

export function downloadText(filename, text, type = 'text/csv') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export const DOCTOR_HINT = 'Is the exporter installed in the training image (<code>pip install primus-lens-wandb-exporter</code>) ' +
  'and <code>PRIMUS_LENS_API_BASE_URL</code> pointing at this server? Run <code>primus-lens doctor</code> inside the training pod to check.';

/** Rank checkboxes (``input[data-rank]`` inside ``picker``): a tick shows the rank, no tick
 * hides it in the set ``hidden()`` returns (a getter: views replace their set on a URL change). */
export function bindRankPicker(picker, hidden, onChange) {
  picker.addEventListener('change', (event) => {
    const box = event.target.closest('input[data-rank]');
    if (!box) return;
    const rank = Number(box.dataset.rank);
    if (box.checked) hidden().delete(rank); else hidden().add(rank);
    onChange();
  });
}

/** A list of metric names for a URL: comma-separated while that is unambiguous (readable links),
 * else a JSON array (a name holding "," or edge spaces, or starting with "["). */
export function namesParam(names) {
  const plain = names.every((n) => n && !n.includes(',') && n.trim() === n && !n.startsWith('['));
  return plain ? names.join(',') : JSON.stringify(names);
}

/** The names of a `namesParam` value (also every older comma-separated link). */
export function namesFrom(text) {
  if (text && text.startsWith('[')) {
    try {
      const names = JSON.parse(text);
      if (Array.isArray(names) && names.every((n) => typeof n === 'string')) return names;
    } catch { /* a comma list whose first name starts with "[" */ }
  }
  return (text || '').split(',').filter(Boolean);
}
