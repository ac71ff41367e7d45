// uPlot charts for the Metrics tab (uPlot is the `uplot` npm package, loaded by index.html
// from /static/vendor/ as the global `uPlot`; see docs/ui.md).
//
// buildChart() turns the series of one chart into uPlot's aligned data plus a description
// of every drawn series; Chart wraps one uPlot instance (create once, then setData for new
// points, recreate only when the set of series or the scales change).
//
// Test hook, read by tests/ui/test_browser.py the way they read plotly's `div.data` before:
//   plotEl.__lens = {
//     library: 'uPlot', revision, xAxis: 'step'|'time', logY,          (from uPlot's own scales)
//     series: [{kind: 'raw'|'smoothed'|'nonfinite', metric, rank, runId, workload (compare view,
//               else null), label, n, x, y,
//               labels (nonfinite only: 'NaN'|'Infinity'|'-Infinity' per point)}],
//     markers: [{label, x, y, left, top}],   NaN/Inf markers drawn by the last redraw
//                                            (left/top: CSS px inside chart.over)
//     chart,                                 the uPlot instance
//   }

import { emaDebiased, formatValue } from './series.js';

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2',
  '#17becf', '#bcbd22', '#7f7f7f', '#393b79', '#ad494a', '#637939'];
export const NONFINITE_COLOR = '#d62728';
const MARKER_PX = 11;           // NaN/Inf marker size (CSS px)
const HOVER_PROX_PX = 12;       // the cursor picks a NaN/Inf marker this close to it

export const CHARTS_MISSING = 'The charting library (uPlot) is missing on the server: run `npm ci` in the ' +
  'checkout (or reinstall a wheel built with npm available); see README.';

/** A colour of the current theme (style.css variables), read at draw time so a theme switch
 * only needs a redraw. */
function themeColor(name, fallback) {
  return () => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}
const AXIS = { stroke: themeColor('--fg', '#1f2937'), grid: { stroke: themeColor('--grid', 'rgba(0,0,0,0.07)'), width: 1 } };

export function chartsAvailable() {
  return typeof window.uPlot === 'function';
}

export function colorFor(index) {
  return PALETTE[index % PALETTE.length];
}

function seriesLabel(series, { withMetric, withRun }) {
  let label = withMetric ? `${series.metric} · rank ${series.rank}` : `rank ${series.rank}`;
  if (withRun && series.runId) label += ` · ${series.runId}`;
  return label;
}

/** Legend/hover number: up to 6 significant digits, exponent for very small or big values. */
export function formatNumber(v) {
  if (v === null || v === undefined) return '—';
  if (!Number.isFinite(v)) return formatValue(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-4 || a >= 1e7)) return v.toExponential(4).replace(/\.?0+e/, 'e');
  return String(Number(v.toPrecision(6)));
}

function sameArray(a, b) {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Describe one chart: the series to draw (raw, EMA-smoothed, NaN/Inf markers) and uPlot's
 * aligned data for them.
 * opts: {xAxis: 'step'|'time', smoothing: 0..1, logY, withMetric, withRun, colorIndex(series)}
 * Returns {series: [...description as in __lens.series, plus color/style], data, sig}.
 */
export function buildChart(seriesList, opts) {
  const time = opts.xAxis === 'time';
  const smoothing = opts.smoothing > 0;
  const usable = (v) => Number.isFinite(v) && (!opts.logY || v > 0);
  const out = [];
  const markers = [];            // after the lines, so the legend lists them last
  for (const s of seriesList) {
    const color = colorFor(opts.colorIndex(s));
    const name = opts.labelOf ? opts.labelOf(s) : seriesLabel(s, opts);
    const x = time ? s.times : s.steps;
    const n = s.values.length;
    const y = new Array(n);
    const markerY = [];
    const markerX = [];
    const labels = [];
    const steps = [];
    let lastFinite = null;
    let pending = 0;             // markers before the first finite value: placed at it
    for (let i = 0; i < n; i++) {
      const v = s.values[i];
      if (Number.isFinite(v)) {
        y[i] = usable(v) ? v : null;   // log scale: values <= 0 are a gap, as in any log plot
        if (usable(v)) {
          lastFinite = v;
          for (; pending > 0; pending--) markerY[markerY.length - pending] = v;
        }
      } else {
        y[i] = null;             // a visible gap in the line, plus a marker
        markerX.push(x[i]);
        markerY.push(lastFinite);
        if (lastFinite === null) pending++;
        labels.push(formatValue(v));
        steps.push(s.steps[i]);
      }
    }
    for (; pending > 0; pending--) markerY[markerY.length - pending] = opts.logY ? 1 : 0;
    const base = { metric: s.metric, rank: s.rank, runId: s.runId, workload: opts.workloadOf ? opts.workloadOf(s) : null };
    out.push({ ...base, kind: 'raw', label: smoothing ? `${name} (raw)` : name, color, x, y, n,
      values: s.values, width: smoothing ? 1 : 1.6, alpha: smoothing ? 0.3 : 1 });
    if (smoothing) {
      const ema = emaDebiased(s.values, opts.smoothing).map((v) => (v !== null && usable(v) ? v : undefined));
      out.push({ ...base, kind: 'smoothed', label: name, color, x, y: ema, n, width: 1.8, alpha: 1 });
    }
    if (labels.length) {
      markers.push({ ...base, kind: 'nonfinite', label: `${name} NaN/Inf`, color: NONFINITE_COLOR,
        x: markerX, y: markerY, n: labels.length, labels, steps });
    }
  }
  out.push(...markers);
  // uPlot wants one x array for all series: join them when they differ (ranks that logged
  // different steps, markers). Alignment fillers are `undefined` (skipped, the line goes on);
  // `null` stays a gap.
  let data;
  if (out.length && out.every((s) => s.kind !== 'nonfinite' && sameArray(s.x, out[0].x))) {
    data = [out[0].x, ...out.map((s) => s.y)];
  } else {
    data = window.uPlot.join(out.map((s) => [s.x, s.y]));
  }
  // Hover labels look points up by x: the aligned data's index is not the series' own.
  for (const s of out) {
    let at = null;
    s.pointAt = (xv) => {
      if (!at) { at = new Map(); s.x.forEach((v, i) => at.set(v, i)); }
      return at.get(xv);
    };
  }
  const sig = [opts.xAxis, opts.logY ? 'log' : 'lin', opts.height,
    ...out.map((s) => `${s.kind}|${s.label}|${s.color}|${s.width}`)].join('\u0000');
  return { series: out, data, sig, xAxis: opts.xAxis, logY: !!opts.logY, height: opts.height || 260 };
}

/** y axis wide enough for its longest tick label. */
function axisSize(u, values, axisIdx) {
  const axis = u.axes[axisIdx];
  // measured on every layout cycle: the first cycle's ticks can be shorter than the final ones (0.1 then 0.125)
  let size = axis.ticks.size + axis.gap;
  const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), '');
  if (longest) {
    u.ctx.font = axis.font[0];
    size += u.ctx.measureText(longest).width / devicePixelRatio;
  }
  return Math.ceil(size) + 4;
}

/** Draw one NaN (×), +Inf (▲) or -Inf (▼) marker centred on (cx, cy), canvas pixels. */
function drawMarker(ctx, label, cx, cy, r) {
  ctx.beginPath();
  if (label === 'NaN') {
    ctx.moveTo(cx - r, cy - r); ctx.lineTo(cx + r, cy + r);
    ctx.moveTo(cx - r, cy + r); ctx.lineTo(cx + r, cy - r);
    ctx.stroke();
    return;
  }
  const dir = label === '-Infinity' ? 1 : -1;      // tip down for -Inf, up for +Inf
  ctx.moveTo(cx, cy + dir * r);
  ctx.lineTo(cx - r, cy - dir * r);
  ctx.lineTo(cx + r, cy - dir * r);
  ctx.closePath();
  ctx.fill();
}

/** uPlot plugin: the NaN/Inf markers, drawn over the lines after every redraw. */
function nonFinitePlugin(chart) {
  return {
    hooks: {
      draw: [(u) => {
        const drawn = [];
        const { ctx } = u;
        const { left, top, width, height } = u.bbox;
        const r = (MARKER_PX / 2) * devicePixelRatio;
        ctx.save();
        ctx.strokeStyle = NONFINITE_COLOR;
        ctx.fillStyle = NONFINITE_COLOR;
        ctx.lineWidth = 2.5 * devicePixelRatio;
        chart.fig.series.forEach((s, i) => {
          if (s.kind !== 'nonfinite' || !u.series[i + 1].show) return;
          for (let j = 0; j < s.x.length; j++) {
            const cx = u.valToPos(s.x[j], 'x', true);
            const cy = u.valToPos(s.y[j], 'y', true);
            if (!(cx >= left - 1 && cx <= left + width + 1 && cy >= top - 1 && cy <= top + height + 1)) continue;
            drawMarker(ctx, s.labels[j], cx, cy, r);
            drawn.push({ label: s.labels[j], x: s.x[j], y: s.y[j], step: s.steps[j], rank: s.rank,
              left: (cx - left) / devicePixelRatio, top: (cy - top) / devicePixelRatio });
          }
        });
        ctx.restore();
        chart.markers = drawn;
      }],
    },
  };
}

/** One chart on one element: create on first draw, update in place afterwards. */
export class Chart {
  /**
   * el: the .plot element; onZoom({min, max}): a drag-select zoom on x (null when the
   * user resets it with a double click).
   */
  constructor(el, onZoom) {
    this.el = el;
    this.onZoom = onZoom;
    this.u = null;
    this.fig = null;
    this.zoom = null;
    this.markers = [];
  }

  options(fig, width) {
    const time = fig.xAxis === 'time';
    const chart = this;
    return {
      width, height: fig.height,
      ms: 1,                                   // x values of the time axis are epoch ms
      scales: {
        x: { time, range: (u, min, max) => (min === max ? [min - 1, max + 1] : [min, max]) },
        y: fig.logY ? { distr: 3, log: 10 } : {},
      },
      axes: [
        { ...AXIS, label: time ? 'time' : 'step', labelSize: 18, size: 36 },
        // (a log axis leaves its minor ticks unlabelled: null)
        { ...AXIS, size: axisSize, values: (u, ticks) => ticks.map((v) => (v == null ? null : formatNumber(v))) },
      ],
      series: [
        { label: time ? 'time' : 'step', value: time ? undefined : (u, v) => (v == null ? '—' : String(v)) },
        ...fig.series.map((s) => (s.kind === 'nonfinite' ? {
          label: s.label, stroke: NONFINITE_COLOR, fill: NONFINITE_COLOR, width: 0,
          paths: () => null, points: { show: false },
          // the hover label says what the point was, not where it is drawn
          value: (u, v, si, idx) => {
            if (idx == null || v == null) return '—';
            const f = chart.fig.series[si - 1];
            const j = f.pointAt(u.data[0][idx]);
            return j === undefined ? '—' : `${f.labels[j]} at step ${f.steps[j]}`;
          },
        } : {
          label: s.label, stroke: s.color, width: s.width, alpha: s.alpha, spanGaps: false,
          points: { size: 5 },
          value: (u, v, si, idx) => {
            if (v != null || idx == null) return formatNumber(v);
            // a cut in the line: say why (NaN/Inf), from the values as logged
            const f = chart.fig.series[si - 1];
            const j = f.kind === 'raw' ? f.pointAt(u.data[0][idx]) : undefined;
            return j === undefined ? '—' : formatNumber(f.values[j]);
          },
        })),
      ],
      cursor: {
        drag: { x: true, y: false, setScale: true },
        // NaN/Inf markers are hovered only when the cursor is near one
        hover: { prox: (u, si) => (chart.fig.series[si - 1]?.kind === 'nonfinite' ? HOVER_PROX_PX : null) },
      },
      legend: { live: true },
      plugins: [nonFinitePlugin(chart)],
      hooks: {
        // Smoothed charts list each line once (the smoothed one; its faint raw line is hidden
        // from the legend): showing or hiding it from the legend does the same to its raw line.
        setSeries: [(u, si, opts) => {
          const f = chart.fig.series[si - 1];
          const raw = chart.fig.series[si - 2];
          if (f && f.kind === 'smoothed' && raw && raw.kind === 'raw' && opts && opts.show !== undefined
              && u.series[si - 1].show !== opts.show) u.setSeries(si - 1, { show: opts.show });
        }],
        setSelect: [(u) => {
          if (u.select.width <= 0) return;
          const min = u.posToVal(u.select.left, 'x');
          const max = u.posToVal(u.select.left + u.select.width, 'x');
          chart.zoom = { min, max };
          chart.onZoom(chart.zoom);
        }],
      },
    };
  }

  /** Draw `fig` (from buildChart); keeps a user's zoom while the same series are drawn. */
  draw(fig, revision) {
    const scalesChanged = this.fig && (this.fig.xAxis !== fig.xAxis || this.fig.logY !== fig.logY);
    if (scalesChanged) this.zoom = null;
    const reuse = this.u && this.fig && this.fig.sig === fig.sig;
    this.fig = fig;
    if (reuse) {
      this.u.setData(fig.data, !this.zoom);
    } else {
      if (this.u) this.u.destroy();
      this.u = new window.uPlot(this.options(fig, this.width()), fig.data, this.el);
      this.u.over.addEventListener('dblclick', () => { this.zoom = null; this.onZoom(null); });
      const rows = this.u.root.querySelectorAll('.u-legend .u-series');
      fig.series.forEach((s, i) => {
        if (s.kind === 'raw' && fig.series[i + 1] && fig.series[i + 1].kind === 'smoothed' && rows[i + 1]) {
          rows[i + 1].hidden = true;
          rows[i + 1].classList.add('legend-hidden');
        }
      });
    }
    if (this.zoom) this.u.setScale('x', this.zoom);
    this.describe(revision);
  }

  width() {
    return Math.max(200, Math.floor(this.el.clientWidth || this.el.parentNode?.clientWidth || 800));
  }

  resize() {
    if (!this.u) return;
    const width = this.width();
    if (Math.abs(width - this.u.width) >= 2) this.u.setSize({ width, height: this.u.height });
  }

  describe(revision) {
    const { u, fig } = this;
    const chart = this;
    this.el.__lens = {
      library: 'uPlot', revision, chart: u,
      xAxis: u.scales.x.time ? 'time' : 'step',
      logY: u.scales.y.distr === 3,
      series: fig.series.map((s) => ({ kind: s.kind, metric: s.metric, rank: s.rank, runId: s.runId, workload: s.workload,
        label: s.label, n: s.n, x: s.x, y: s.y, labels: s.labels || null })),
      get markers() { return chart.markers; },
    };
  }

  destroy() {
    if (this.u) this.u.destroy();
    this.u = null;
    this.fig = null;
    delete this.el.__lens;
  }
}

/** A chart card with nothing to draw: ``message`` (HTML) instead of the plot, the chart freed. */
export function clearCard(card, message, resizer) {
  card.state.innerHTML = message;
  card.plot.hidden = true;
  if (card.chart) { resizer.unobserve(card.plot); card.chart.destroy(); card.chart = null; }
  delete card.plot.dataset.revision;
}
