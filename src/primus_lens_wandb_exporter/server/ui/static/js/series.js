// Pure data handling for the Metrics tab: no DOM, no charting library (testable in Node).

/** Wire value (number or "NaN"/"Infinity"/"-Infinity") -> JS number. */
export function parseValue(value) {
  if (typeof value === 'number') return value;
  if (value === 'NaN' || value === null || value === undefined) return NaN;
  if (value === 'Infinity' || value === '+Infinity') return Infinity;
  if (value === '-Infinity') return -Infinity;
  return Number(value);
}

/**
 * Exponential moving average as W&B (and TensorBoard) draw it: zero-initialised and
 * debiased by 1 - weight^n, so the first points are not pulled towards 0.
 * Non-finite values are skipped (they are marked separately) and give null.
 */
export function emaDebiased(values, weight) {
  const out = new Array(values.length);
  if (!(weight > 0)) {
    for (let i = 0; i < values.length; i++) out[i] = Number.isFinite(values[i]) ? values[i] : null;
    return out;
  }
  let last = 0;
  let debias = 1;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) { out[i] = null; continue; }
    last = last * weight + (1 - weight) * v;
    debias *= weight;
    out[i] = last / (1 - debias);
  }
  return out;
}

export function seriesKey(metric, rank, runId) {
  return `${metric}\u0000${rank}\u0000${runId ?? ''}`;
}

/** Points of one (metric, rank, run) kept sorted by step. */
export class Series {
  constructor(metric, rank, runId) {
    this.metric = metric;
    this.rank = rank;
    this.runId = runId ?? '';
    this.steps = [];
    this.times = [];
    this.values = [];
  }

  get length() { return this.steps.length; }
  get lastStep() { return this.steps.length ? this.steps[this.steps.length - 1] : null; }

  /** Insert or replace (same step = upsert, as on the server). Returns true if anything changed. */
  upsert(step, time, value) {
    const n = this.steps.length;
    if (n === 0 || step > this.steps[n - 1]) {
      this.steps.push(step); this.times.push(time); this.values.push(value);
      return true;
    }
    let lo = 0, hi = n;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (this.steps[mid] < step) lo = mid + 1; else hi = mid; }
    if (this.steps[lo] === step) {
      const same = this.times[lo] === time && Object.is(this.values[lo], value);
      this.times[lo] = time; this.values[lo] = value;
      return !same;
    }
    this.steps.splice(lo, 0, step); this.times.splice(lo, 0, time); this.values.splice(lo, 0, value);
    return true;
  }

  nonFiniteCount() {
    let count = 0;
    for (const v of this.values) if (!Number.isFinite(v)) count++;
    return count;
  }
}

/** All series of one data source, keyed by (metric, rank, run). */
export class SeriesStore {
  constructor() { this.map = new Map(); }

  clear() { this.map.clear(); }

  dropMetric(metric) {
    for (const [key, s] of this.map) if (s.metric === metric) this.map.delete(key);
  }

  /** Merge `data` rows of a metrics/data response; returns the set of metric names that changed. */
  merge(rows) {
    const changed = new Set();
    for (const row of rows) {
      const rank = row.rank ?? 0;
      const runId = row.run_id ?? '';
      const key = seriesKey(row.metric_name, rank, runId);
      let series = this.map.get(key);
      if (!series) { series = new Series(row.metric_name, rank, runId); this.map.set(key, series); }
      if (series.upsert(Number(row.iteration ?? 0), Number(row.timestamp), parseValue(row.value))) {
        changed.add(row.metric_name);
      }
    }
    return changed;
  }

  forMetric(metric) {
    const out = [];
    for (const s of this.map.values()) if (s.metric === metric) out.push(s);
    out.sort((a, b) => a.rank - b.rank || a.runId.localeCompare(b.runId));
    return out;
  }

  ranks() {
    const ranks = new Set();
    for (const s of this.map.values()) ranks.add(s.rank);
    return [...ranks].sort((a, b) => a - b);
  }

  runIds() {
    const ids = new Set();
    for (const s of this.map.values()) ids.add(s.runId);
    return [...ids];
  }

  /** Smallest last step over the given metrics' series, or null when one of them has no points. */
  minLastStep(metrics) {
    let min = null;
    for (const metric of metrics) {
      const list = this.forMetric(metric);
      if (!list.length) return null;
      for (const s of list) if (min === null || s.lastStep < min) min = s.lastStep;
    }
    return min;
  }
}

export function formatValue(v) {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  return String(v);
}

function csvField(text) {
  const s = String(text);
  return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

/** CSV of full-resolution rows of metrics/data (one line per point). */
export function rowsToCsv(rows) {
  const lines = ['metric,rank,run_id,step,timestamp_ms,time_utc,value'];
  for (const r of rows) {
    const t = Number(r.timestamp);
    lines.push([r.metric_name, r.rank ?? 0, r.run_id ?? '', r.iteration, t,
      Number.isFinite(t) ? new Date(t).toISOString() : '', formatValue(parseValue(r.value))].map(csvField).join(','));
  }
  return lines.join('\n') + '\n';
}
