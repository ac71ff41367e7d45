// Plotly figures for the Metrics tab. Traces carry `meta` ({kind, metric, rank, runId})
// so the page (and its tests) can tell raw, smoothed and non-finite traces apart.

import { emaDebiased, formatValue } from './series.js';

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2',
  '#17becf', '#bcbd22', '#7f7f7f', '#393b79', '#ad494a', '#637939'];
const NONFINITE_COLOR = '#d62728';
const NONFINITE_SYMBOL = { NaN: 'x', Infinity: 'triangle-up', '-Infinity': 'triangle-down' };

let plotlyPromise = null;

/** Resolves with window.Plotly once the async plotly bundle has run; rejects if it failed to load. */
export function plotlyReady() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const script = document.getElementById('plotly-script');
      const failed = () => reject(new Error('The charting library (plotly) did not load: is the plotly package installed on the server?'));
      if (window.__plotlyFailed || !script) { failed(); return; }
      script.addEventListener('load', () => (window.Plotly ? resolve(window.Plotly) : failed()));
      script.addEventListener('error', failed);
    });
  }
  return plotlyPromise;
}

export function colorFor(index) {
  return PALETTE[index % PALETTE.length];
}

function seriesLabel(series, { withMetric, withRun }) {
  let label = withMetric ? `${series.metric} · rank ${series.rank}` : `rank ${series.rank}`;
  if (withRun && series.runId) label += ` · ${series.runId}`;
  return label;
}

/**
 * Build {data, layout} for one chart.
 * opts: {title, xAxis: 'step'|'time', smoothing: 0..1, logY, withMetric, withRun, colorIndex(series)}
 */
export function buildFigure(seriesList, opts) {
  const data = [];
  const nonFinite = { x: [], y: [], text: [], symbol: [], customdata: [] };
  const time = opts.xAxis === 'time';
  for (const series of seriesList) {
    const color = colorFor(opts.colorIndex(series));
    const name = seriesLabel(series, opts);
    const x = (time ? series.times : series.steps).slice();
    const y = new Array(series.values.length);
    let lastFinite = null;
    const pendingNonFinite = [];
    for (let i = 0; i < series.values.length; i++) {
      const v = series.values[i];
      if (Number.isFinite(v)) {
        y[i] = v;
        lastFinite = v;
        // Non-finite points before the first finite one sit at the first finite value.
        for (const j of pendingNonFinite) nonFinite.y[j] = v;
        pendingNonFinite.length = 0;
      } else {
        y[i] = null;  // a visible gap in the line, plus a marker below
        const label = formatValue(v);
        nonFinite.x.push(x[i]);
        nonFinite.y.push(lastFinite);
        if (lastFinite === null) pendingNonFinite.push(nonFinite.y.length - 1);
        nonFinite.text.push(`${name}: ${label} at step ${series.steps[i]}`);
        nonFinite.symbol.push(NONFINITE_SYMBOL[label] || 'x');
        nonFinite.customdata.push(label);
      }
    }
    for (const j of pendingNonFinite) nonFinite.y[j] = 0;
    const smoothing = opts.smoothing > 0;
    data.push({
      type: 'scatter', mode: series.values.length === 1 ? 'markers' : 'lines', name, x, y,
      line: { color, width: smoothing ? 1 : 1.6 }, marker: { color, size: 6 },
      opacity: smoothing ? 0.3 : 1, connectgaps: false, legendgroup: name,
      showlegend: !smoothing,
      hovertemplate: `${name}<br>step %{customdata}<br>%{y}<extra></extra>`,
      customdata: series.steps,
      meta: { kind: 'raw', metric: series.metric, rank: series.rank, runId: series.runId },
    });
    if (smoothing) {
      data.push({
        type: 'scatter', mode: 'lines', name, x, y: emaDebiased(series.values, opts.smoothing),
        line: { color, width: 1.8 }, connectgaps: true, legendgroup: name,
        hovertemplate: `${name} (smoothed)<br>step %{customdata}<br>%{y}<extra></extra>`,
        customdata: series.steps,
        meta: { kind: 'smoothed', metric: series.metric, rank: series.rank, runId: series.runId },
      });
    }
  }
  if (nonFinite.x.length) {
    data.push({
      type: 'scatter', mode: 'markers', name: 'NaN / Inf', x: nonFinite.x, y: nonFinite.y,
      text: nonFinite.text, customdata: nonFinite.customdata, hovertemplate: '%{text}<extra></extra>',
      marker: { color: NONFINITE_COLOR, size: 11, symbol: nonFinite.symbol, line: { width: 2, color: NONFINITE_COLOR } },
      meta: { kind: 'nonfinite', metric: opts.title },
    });
  }
  const layout = {
    height: opts.height || 280,
    margin: { l: 56, r: 16, t: 8, b: 40 },
    xaxis: {
      title: { text: time ? 'time' : 'step', standoff: 4 }, type: time ? 'date' : 'linear',
      automargin: true, showspikes: true, spikemode: 'across', spikethickness: 1,
    },
    yaxis: { type: opts.logY ? 'log' : 'linear', automargin: true, exponentformat: 'e' },
    hovermode: 'closest',
    showlegend: data.filter((t) => t.showlegend !== false).length > 1 || nonFinite.x.length > 0,
    legend: { orientation: 'h', y: -0.22, font: { size: 11 } },
    // Keeps the user's zoom across live updates and option changes of the same chart.
    datarevision: opts.revision ?? 0,
    uirevision: `${opts.title}|${opts.xAxis}|${opts.logY}`,
    paper_bgcolor: 'rgba(0,0,0,0)', plot_bgcolor: '#fff',
    font: { family: 'system-ui, -apple-system, Segoe UI, Roboto, sans-serif', size: 12 },
  };
  return { data, layout };
}

export const PLOT_CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ['lasso2d', 'select2d', 'toImage'],
  scrollZoom: false,
};
