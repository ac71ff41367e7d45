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

/**
 * Points of one (metric, rank, run) kept sorted by (step, row).
 * A point is its W&B history row (as on the server): two rows may share a step
 * (a define_metric step metric such as epoch), and steps may be fractional.
 */
export class Series {
  constructor(metric, rank, runId) {
    this.metric = metric;
    this.rank = rank;
    this.runId = runId ?? '';
    this.steps = [];
    this.rows = [];
    this.times = [];
    this.values = [];
    this.stepOfRow = new Map();
    this.maxRow = null;
  }

  get length() { return this.steps.length; }

  /** Index of the first point at or after (step, row). */
  _position(step, row) {
    let lo = 0, hi = this.steps.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const s = this.steps[mid];
      if (s < step || (s === step && this.rows[mid] < row)) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  /** Insert or replace (same row = upsert, as on the server). Returns true if anything changed. */
  upsert(step, time, value, row = step) {
    const old = this.stepOfRow.get(row);
    if (old !== undefined) {
      const i = this._position(old, row);
      if (old === step) {
        const same = this.times[i] === time && Object.is(this.values[i], value);
        this.times[i] = time; this.values[i] = value;
        return !same;
      }
      // The row was re-sent with another step: it moves.
      this.steps.splice(i, 1); this.rows.splice(i, 1); this.times.splice(i, 1); this.values.splice(i, 1);
    }
    this.stepOfRow.set(row, step);
    if (this.maxRow === null || row > this.maxRow) this.maxRow = row;
    const n = this.steps.length;
    if (n === 0 || step > this.steps[n - 1] || (step === this.steps[n - 1] && row > this.rows[n - 1])) {
      this.steps.push(step); this.rows.push(row); this.times.push(time); this.values.push(value);
      return true;
    }
    const lo = this._position(step, row);
    this.steps.splice(lo, 0, step); this.rows.splice(lo, 0, row);
    this.times.splice(lo, 0, time); this.values.splice(lo, 0, value);
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
      const step = Number(row.iteration ?? 0);
      // Servers before rows were told apart send no row: the step was the row.
      if (series.upsert(step, Number(row.timestamp), parseValue(row.value), row.row ?? step)) {
        changed.add(row.metric_name);
      }
    }
    return changed;
  }

  /** Merge the `series` of a runs/data response (columns per series); returns the changed metric names. */
  mergeColumns(list) {
    const changed = new Set();
    for (const c of list) {
      const key = seriesKey(c.metric_name, c.rank, c.run_id);
      let series = this.map.get(key);
      if (!series) { series = new Series(c.metric_name, c.rank, c.run_id); this.map.set(key, series); }
      for (let i = 0; i < c.step.length; i++) {
        if (series.upsert(Number(c.step[i]), Number(c.timestamp[i]), parseValue(c.value[i]), c.row[i])) changed.add(c.metric_name);
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

  /**
   * Smallest last row over the given metrics' series, or null when one of them has no
   * points: live refresh asks for rows after it (rows only grow; steps may repeat or go back).
   */
  minLastRow(metrics) {
    let min = null;
    for (const metric of metrics) {
      const list = this.forMetric(metric);
      if (!list.length) return null;
      for (const s of list) if (min === null || s.maxRow < min) min = s.maxRow;
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
  const lines = ['metric,rank,run_id,step,row,timestamp_ms,time_utc,value'];
  for (const r of rows) {
    const t = Number(r.timestamp);
    lines.push([r.metric_name, r.rank ?? 0, r.run_id ?? '', r.iteration, r.row ?? r.iteration, t,
      Number.isFinite(t) ? new Date(t).toISOString() : '', formatValue(parseValue(r.value))].map(csvField).join(','));
  }
  return lines.join('\n') + '\n';
}

/**
 * The time window (epoch ms, for metrics/data's start/end) of a zoom from lo to hi on the
 * x axis. On the step axis the window is mapped through the points held (time grows with
 * step), one point wider on each side. null when there is nothing to ask for.
 */
export function timeWindow(seriesList, xAxis, lo, hi) {
  let start, end;
  if (xAxis === 'time') {
    start = Math.floor(lo); end = Math.ceil(hi);
  } else {
    for (const s of seriesList) {
      const i = s.steps.findIndex((x) => x >= lo);
      let j = s.steps.length - 1;
      while (j >= 0 && s.steps[j] > hi) j--;
      const a = s.times[Math.max(0, i < 0 ? s.steps.length - 1 : i - 1)];
      const b = s.times[Math.min(s.steps.length - 1, j + 1)];
      start = start === undefined ? a : Math.min(start, a);
      end = end === undefined ? b : Math.max(end, b);
    }
  }
  if (!Number.isFinite(start) || !Number.isFinite(end) || end < start) return null;
  return { start, end };
}
