// Metrics tab: data source, metric picker, charts, rank selector, smoothing, live refresh.

import { apiGet } from './api.js';
import { buildChart, Chart, chartsAvailable, CHARTS_MISSING, clearCard } from './charts.js';
import { SeriesStore, rowsToCsv, timeWindow } from './series.js';
import { bindRankPicker, esc, formatCount, downloadText, DOCTOR_HINT, namesFrom, namesParam } from './util.js';

const LIVE_MS = 1000;              // refresh period while a run is live
const AVAILABLE_EVERY = 5;         // re-list metrics every N live ticks
const FINISH_GRACE_TICKS = 5;      // ticks of catch-up after a run stops being live
const DEFAULT_SELECTED = 24;       // metrics drawn by default
const FETCH_GROUP = 12;            // metrics per metrics/data request on first load
const PREFS_KEY = 'primus-lens-metric-prefs';
const SOURCE_LABELS = { wandb: 'WandB' };
const SYSTEM_SECTION = '\u0002system';

function loadPrefs() {
  const defaults = { xAxis: 'step', smoothing: 0, logY: false, layout: 'per-metric' };
  try { return { ...defaults, ...JSON.parse(localStorage.getItem(PREFS_KEY) || '{}') }; } catch { return defaults; }
}

function savePrefs(p) {
  try { localStorage.setItem(PREFS_KEY, JSON.stringify(p)); } catch { /* private mode */ }
}

/** Server-side downsampling target per series: about 1.5 points per horizontal pixel. */
function maxPointsFor(el) {
  const width = el.clientWidth || 1200;
  return Math.max(400, Math.min(2000, Math.round(width * 0.75)));
}

export function metricsTab(el, ctx) {
  const uid = ctx.uid;
  const base = `workloads/${encodeURIComponent(uid)}/metrics`;
  const prefs = loadPrefs();
  const query = new URLSearchParams((location.hash.split('?')[1]) || '');
  const st = {
    sources: null, source: query.get('source') || null,
    available: [], counts: new Map(),
    selected: new Set(), userSelected: false,
    loaded: new Set(), loading: new Set(), failed: new Map(),
    store: new SeriesStore(), hiddenRanks: new Set(),
    revision: 0, paused: false, disposed: false, tick: 0,
    cards: new Map(), refetchAt: new Map(), error: null,
  };
  if (query.get('metrics')) {
    for (const m of namesFrom(query.get('metrics'))) st.selected.add(m);
    st.userSelected = true;
  }
  // A shared URL states the view; it wins over this browser's saved preferences (not saved
  // until the user changes a control).
  if (query.has('x')) prefs.xAxis = query.get('x') === 'time' ? 'time' : 'step';
  if (query.has('smoothing')) prefs.smoothing = Math.min(0.99, Math.max(0, Number(query.get('smoothing')) || 0));
  if (query.has('logy')) prefs.logY = query.get('logy') === '1';
  if (query.has('layout')) prefs.layout = query.get('layout') === 'overlay' ? 'overlay' : 'per-metric';
  for (const r of (query.get('hide_ranks') || '').split(',')) if (r !== '' && Number.isInteger(Number(r))) st.hiddenRanks.add(Number(r));

  /** The URL follows the view (replaceState: no history entry, no re-render), so it can be shared. */
  function syncUrl() {
    const q = new URLSearchParams();
    if (st.source) q.set('source', st.source);
    if (st.userSelected) q.set('metrics', namesParam(st.available.filter((m) => st.selected.has(m))));
    if (st.hiddenRanks.size) q.set('hide_ranks', [...st.hiddenRanks].sort((a, b) => a - b).join(','));
    q.set('x', prefs.xAxis);
    q.set('smoothing', String(prefs.smoothing));
    if (prefs.logY) q.set('logy', '1');
    if (prefs.layout !== 'per-metric') q.set('layout', prefs.layout);
    const path = location.hash.split('?')[0];
    if (st.disposed || !path.endsWith('/metrics')) return;
    history.replaceState(null, '', `${path}?${q.toString().replace(/%2C/g, ',')}`);
  }
  let timer = null;
  let maxPoints = 1000;
  // Charts follow their card's width (window resized, controls column shown or hidden).
  const resizer = new ResizeObserver((entries) => {
    for (const entry of entries) {
      for (const card of st.cards.values()) if (card.plot === entry.target && card.chart) card.chart.resize();
    }
  });

  el.innerHTML = `
    <div class="metrics-layout">
      <aside class="controls" id="metric-controls">
        <label>Data source
          <select id="source-select" aria-label="Data source"></select></label>
        <div class="control-group">
          <div class="control-title">Metrics <span class="muted" id="metric-count"></span></div>
          <input type="search" id="metric-filter" placeholder="Filter metrics" aria-label="Filter metrics">
          <div class="row-buttons"><button type="button" id="metrics-all">All</button><button type="button" id="metrics-none">None</button></div>
          <div id="metric-picker" class="checklist"></div>
        </div>
        <div class="control-group">
          <div class="control-title">Ranks</div>
          <div id="rank-picker" class="checklist ranks"><span class="muted">—</span></div>
        </div>
        <label>Charts
          <select id="layout-select"><option value="per-metric">One chart per metric</option><option value="overlay">Overlay in one chart</option></select></label>
        <label>X axis
          <select id="xaxis-select"><option value="step">Step</option><option value="time">Time</option></select></label>
        <label>Smoothing (EMA) <output id="smoothing-value"></output>
          <input type="range" id="smoothing" min="0" max="0.99" step="0.01"></label>
        <label class="inline"><input type="checkbox" id="logy"> Log scale (y)</label>
      </aside>
      <div class="metrics-main">
        <div class="live-bar" id="live-bar"></div>
        <div id="metrics-state"></div>
        <div id="charts" class="charts"></div>
      </div>
    </div>`;

  const $ = (sel) => el.querySelector(sel);
  const chartsEl = $('#charts');
  const stateEl = $('#metrics-state');
  $('#layout-select').value = prefs.layout;
  $('#xaxis-select').value = prefs.xAxis;
  $('#smoothing').value = String(prefs.smoothing);
  $('#smoothing-value').textContent = Number(prefs.smoothing).toFixed(2);
  $('#logy').checked = prefs.logY;

  // ---- controls -------------------------------------------------------------------------
  const onPrefs = () => {
    prefs.layout = $('#layout-select').value;
    prefs.xAxis = $('#xaxis-select').value;
    prefs.smoothing = Number($('#smoothing').value);
    prefs.logY = $('#logy').checked;
    $('#smoothing-value').textContent = prefs.smoothing.toFixed(2);
    savePrefs(prefs);
    syncUrl();
    scheduleDraw();
  };
  for (const id of ['#layout-select', '#xaxis-select', '#logy']) $(id).addEventListener('change', onPrefs);
  $('#smoothing').addEventListener('input', onPrefs);
  $('#source-select').addEventListener('change', () => {
    st.source = $('#source-select').value;
    resetData();
    st.userSelected = false;
    st.selected.clear();
    syncUrl();
    loadAvailable().catch(showError);
  });
  $('#metric-filter').addEventListener('input', drawPicker);
  $('#metrics-all').addEventListener('click', () => {
    for (const m of filteredMetrics()) st.selected.add(m);
    st.userSelected = true; drawPicker(); syncUrl(); ensureData();
  });
  $('#metrics-none').addEventListener('click', () => {
    for (const m of filteredMetrics()) st.selected.delete(m);
    st.userSelected = true; drawPicker(); syncUrl(); ensureData();
  });
  $('#metric-picker').addEventListener('change', (event) => {
    const box = event.target.closest('input[data-metric]');
    if (!box) return;
    if (box.checked) st.selected.add(box.dataset.metric); else st.selected.delete(box.dataset.metric);
    st.userSelected = true;
    $('#metric-count').textContent = `${st.selected.size} / ${st.available.length}`;
    syncUrl();
    ensureData();
  });
  bindRankPicker($('#rank-picker'), () => st.hiddenRanks, () => { syncUrl(); scheduleDraw(); });
  $('#live-bar').addEventListener('click', (event) => {
    if (event.target.id !== 'live-toggle') return;
    st.paused = !st.paused;
    drawLiveBar();
  });
  chartsEl.addEventListener('click', (event) => {
    const button = event.target.closest('button.csv');
    if (button) downloadCsv(button.dataset.metrics.split('\u0000')).catch(showError);
  });

  function resetData() {
    st.store.clear(); st.loaded.clear(); st.loading.clear(); st.failed.clear(); st.refetchAt.clear();
    for (const card of st.cards.values()) { if (card.chart) card.chart.destroy(); card.el.remove(); }
    st.cards.clear();
  }

  function filteredMetrics() {
    const q = $('#metric-filter').value.trim().toLowerCase();
    return st.available.filter((m) => !q || m.toLowerCase().includes(q));
  }

  function drawPicker() {
    const list = filteredMetrics();
    $('#metric-count').textContent = `${st.selected.size} / ${st.available.length}`;
    $('#metric-picker').innerHTML = list.length ? list.map((m) => `
      <label title="${esc(m)} (${formatCount(st.counts.get(m))} points)"><input type="checkbox" data-metric="${esc(m)}" ${st.selected.has(m) ? 'checked' : ''}>
      <span>${esc(m)}</span></label>`).join('') : '<span class="muted">no metric</span>';
  }

  function drawRankPicker() {
    const ranks = new Set(st.store.ranks());
    for (const r of (ctx.detail && ctx.detail.ranks) || []) ranks.add(Number(r));
    const sorted = [...ranks].sort((a, b) => a - b);
    const picker = $('#rank-picker');
    const sig = sorted.join(',') + '|' + [...st.hiddenRanks].join(',');
    if (picker.dataset.sig === sig) return;
    picker.dataset.sig = sig;
    picker.innerHTML = sorted.length ? sorted.map((r) => `
      <label><input type="checkbox" data-rank="${r}" ${st.hiddenRanks.has(r) ? '' : 'checked'}> rank ${r}</label>`).join('')
      : '<span class="muted">—</span>';
  }

  function isLive() { return ctx.detail && ctx.detail.status === 'live'; }

  function drawLiveBar() {
    const bar = $('#live-bar');
    if (!ctx.detail) { bar.innerHTML = ''; bar.dataset.live = 'unknown'; return; }
    if (isLive()) {
      bar.innerHTML = st.paused
        ? '<span class="badge muted">paused</span> Live refresh paused. <button type="button" id="live-toggle">Resume</button>'
        : `<span class="badge status live">● live</span> New points appear every ${LIVE_MS / 1000} s. <button type="button" id="live-toggle">Pause</button>`;
      bar.dataset.live = st.paused ? 'paused' : 'on';
    } else {
      bar.innerHTML = '<span class="badge status finished">finished</span> No run of this workload is live; charts show everything stored.';
      bar.dataset.live = 'off';
    }
  }

  function showError(err) {
    st.error = err;
    stateEl.innerHTML = `<div class="state error" role="alert">${esc(err.message)} — retrying.</div>`;
  }

  function clearError() {
    if (st.error) { st.error = null; stateEl.innerHTML = ''; }
  }

  // ---- loading ------------------------------------------------------------------------------
  async function loadSources() {
    const resp = await apiGet(`${base}/sources`);
    const sources = (resp.data_sources || []).filter((s) => s.name);
    st.sources = sources;
    if (!sources.length) {
      stateEl.innerHTML = `<div class="state empty" id="metrics-empty"><h2>No data yet</h2>
        <p>This workload has no metric points. ${DOCTOR_HINT}</p>
        <p>This page checks again every second.</p></div>`;
      return false;
    }
    if (!st.source || !sources.some((s) => s.name === st.source)) {
      st.source = (sources.find((s) => s.name === 'wandb') || sources[0]).name;
    }
    $('#source-select').innerHTML = sources.map((s) =>
      `<option value="${esc(s.name)}">${esc(SOURCE_LABELS[s.name] || s.name)} (${formatCount(s.count)})</option>`).join('');
    $('#source-select').value = st.source;
    if (stateEl.querySelector('#metrics-empty')) stateEl.innerHTML = '';
    return true;
  }

  async function loadAvailable(prefetched = null) {
    const resp = (prefetched && prefetched.source === st.source)
      ? await prefetched.response
      : await apiGet(`${base}/available`, { data_source: st.source });
    const metrics = (resp.metrics || []).map((m) => (typeof m === 'string' ? { name: m } : m));
    const names = metrics.map((m) => m.name).sort((a, b) => a.localeCompare(b));
    st.counts = new Map(metrics.map((m) => [m.name, m.count]));
    const added = names.filter((n) => !st.available.includes(n));
    st.available = names;
    if (!st.userSelected) {
      for (const n of added) if (st.selected.size < DEFAULT_SELECTED) st.selected.add(n);
    }
    drawPicker();
    if (!names.length) {
      stateEl.innerHTML = `<div class="state empty" id="metrics-empty"><h2>No metrics in “${esc(st.source)}” yet</h2>
        <p>${DOCTOR_HINT}</p></div>`;
    }
    await ensureData();
  }

  /** Fetch metrics (downsampled) in one request: fewer round trips than one per chart. */
  async function fetchMetrics(metrics) {
    for (const m of metrics) st.loading.add(m);
    drawCards();
    try {
      const resp = await apiGet(`${base}/data`, { data_source: st.source, metrics, max_points: maxPoints });
      const current = metrics.filter((m) => !st.disposed && st.selected.has(m) && st.loading.has(m));
      const rows = (resp.data || []).filter((r) => current.includes(r.metric_name));
      for (const m of current) st.store.dropMetric(m);
      st.store.merge(rows);
      for (const m of current) {
        st.loaded.add(m);
        st.failed.delete(m);
        const longest = Math.max(0, ...st.store.forMetric(m).map((s) => s.length));
        st.refetchAt.set(m, Math.max(4 * maxPoints, 2 * longest));
      }
    } catch (err) {
      for (const m of metrics) st.failed.set(m, err);
    } finally {
      for (const m of metrics) st.loading.delete(m);
    }
    if (st.disposed) return;
    drawRankPicker();
    for (const m of metrics) drawMetric(m);
  }

  const fetchMetric = (metric) => fetchMetrics([metric]);

  async function ensureData() {
    maxPoints = maxPointsFor(chartsEl);
    drawCards();
    const wanted = [...st.selected].filter((m) => st.available.includes(m) && !st.loaded.has(m) && !st.loading.has(m));
    const groups = [];
    for (let i = 0; i < wanted.length; i += FETCH_GROUP) groups.push(wanted.slice(i, i + FETCH_GROUP));
    await Promise.all(groups.map(fetchMetrics));
  }

  /** Live refresh: only rows after the last row we hold (after_row), merged in place. */
  async function pollNew() {
    const metrics = [...st.loaded].filter((m) => st.selected.has(m));
    if (!metrics.length) return;
    const withData = metrics.filter((m) => st.store.forMetric(m).length);
    const empty = metrics.filter((m) => !st.store.forMetric(m).length);
    const requests = [];
    if (withData.length) {
      requests.push(apiGet(`${base}/data`, {
        data_source: st.source, metrics: withData, after_row: st.store.minLastRow(withData),
      }));
    }
    if (empty.length) requests.push(apiGet(`${base}/data`, { data_source: st.source, metrics: empty, max_points: maxPoints }));
    const changed = new Set();
    for (const resp of await Promise.all(requests)) {
      for (const m of st.store.merge(resp.data || [])) changed.add(m);
    }
    if (!changed.size) return;
    drawRankPicker();
    for (const m of changed) {
      const longest = Math.max(0, ...st.store.forMetric(m).map((s) => s.length));
      // A long live run: fetch it downsampled again instead of growing without bound.
      if (longest > (st.refetchAt.get(m) || Infinity)) { st.loaded.delete(m); fetchMetric(m); }
    }
    if (prefs.layout === 'overlay') drawMetric(null); else for (const m of changed) drawMetric(m);
  }

  // ---- drawing ------------------------------------------------------------------------------
  function chartKeys() {
    const selected = st.available.filter((m) => st.selected.has(m));
    if (prefs.layout === 'overlay') return selected.length ? [{ key: '\u0000overlay', metrics: selected }] : [];
    // W&B-style sections: metrics grouped by the prefix before the first "/".
    // The exporter's system metrics (_primus_sys_*, _primus_gpu_<i>_*) get a section of their
    // own, after the user's metrics.
    const sectionOf = (m) => (m.startsWith('_primus_sys_') || m.startsWith('_primus_gpu_') ? SYSTEM_SECTION
      : m.includes('/') ? m.slice(0, m.indexOf('/')) : '');
    const order = (x) => (x === SYSTEM_SECTION ? 2 : x === '' ? 1 : 0);
    const sections = new Set(selected.map(sectionOf));
    if (!selected.some((m) => sectionOf(m) !== '')) return selected.map((m) => ({ key: m, metrics: [m] }));
    const keys = [];
    for (const section of [...sections].sort((a, b) => order(a) - order(b) || a.localeCompare(b))) {
      const name = section === SYSTEM_SECTION ? 'system (CPU, memory, GPU)' : section || 'other';
      keys.push({ key: `\u0001${section}`, section: name, metrics: [] });
      for (const m of selected) if (sectionOf(m) === section) keys.push({ key: m, metrics: [m] });
    }
    return keys;
  }

  function sectionCard(name) {
    const el = document.createElement('h2');
    el.className = 'chart-section';
    el.dataset.section = name;
    el.textContent = name;
    return { el, plot: null, metrics: [], section: name };
  }

  function drawCards() {
    const keys = chartKeys();
    const wanted = new Set(keys.map((k) => k.key));
    for (const [key, card] of st.cards) {
      if (!wanted.has(key)) {
        if (card.chart) { resizer.unobserve(card.plot); card.chart.destroy(); }
        card.el.remove(); st.cards.delete(key);
      }
    }
    let previous = null;
    for (const { key, metrics, section } of keys) {
      let card = st.cards.get(key);
      if (!card && section !== undefined) {
        card = sectionCard(section);
        st.cards.set(key, card);
      } else if (!card) {
        const div = document.createElement('section');
        div.className = 'chart-card';
        const title = key === '\u0000overlay' ? `${metrics.length} metrics` : key;
        div.dataset.metric = key === '\u0000overlay' ? '' : key;
        div.innerHTML = `<div class="chart-head"><h3 title="${esc(title)}">${esc(title)}</h3>
          <span class="chart-info"></span>
          <button type="button" class="csv" title="Download all points of this chart (full resolution) as CSV">CSV</button></div>
          <div class="chart-state"><div class="state loading small">Loading…</div></div>
          <div class="plot"></div>`;
        card = { el: div, plot: div.querySelector('.plot'), info: div.querySelector('.chart-info'), state: div.querySelector('.chart-state'), metrics };
        card.plot.dataset.metric = div.dataset.metric;
        st.cards.set(key, card);
      }
      card.metrics = metrics;
      if (card.plot) card.el.querySelector('button.csv').dataset.metrics = metrics.join('\u0000');
      if (key === '\u0000overlay') card.el.querySelector('h3').textContent = metrics.length === 1 ? metrics[0] : `${metrics.length} metrics`;
      // Keep DOM order equal to the metric order.
      const expectedPrev = previous ? previous.el : null;
      if (card.el.previousElementSibling !== expectedPrev || card.el.parentNode !== chartsEl) {
        if (expectedPrev) expectedPrev.after(card.el); else chartsEl.prepend(card.el);
      }
      previous = card;
    }
    chartsEl.classList.toggle('overlay', prefs.layout === 'overlay');
  }

  let drawPending = false;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      drawCards();
      for (const card of st.cards.values()) drawCard(card);
    });
  }

  function drawMetric(metric) {
    drawCards();
    for (const card of st.cards.values()) {
      if (metric === null || card.metrics.includes(metric)) drawCard(card);
    }
  }

  function drawCard(card) {
    if (!card.plot) return;   // a section header
    if (!chartsAvailable()) {
      card.state.innerHTML = `<div class="state error small charts-missing">${esc(CHARTS_MISSING)}</div>`;
      if (!stateEl.querySelector('#charts-missing')) {
        stateEl.insertAdjacentHTML('beforeend', `<div class="state error" id="charts-missing" role="alert">
          <h2>Charting library missing</h2><p>${esc(CHARTS_MISSING)}</p></div>`);
      }
      return;
    }
    const pending = card.metrics.filter((m) => !st.loaded.has(m));
    const failed = card.metrics.map((m) => st.failed.get(m)).filter(Boolean);
    if (failed.length && pending.length) {
      card.state.innerHTML = `<div class="state error small">Could not load: ${esc(failed[0].message)}</div>`;
      return;
    }
    if (pending.length) return;  // still loading
    const ranks = st.store.ranks();
    const runIds = st.store.runIds();
    const series = card.metrics.flatMap((m) => st.store.forMetric(m)).filter((s) => !st.hiddenRanks.has(s.rank));
    const total = series.reduce((n, s) => n + s.length, 0);
    const nonFinite = series.reduce((n, s) => n + s.nonFiniteCount(), 0);
    const stored = card.metrics.reduce((n, m) => n + (st.counts.get(m) || 0), 0);
    let info = `${formatCount(total)} point${total === 1 ? '' : 's'}`;
    if (stored > total && st.hiddenRanks.size === 0) info += ` of ${formatCount(stored)} (downsampled on the server)`;
    card.info.innerHTML = esc(info) + (nonFinite ? ` · <span class="nonfinite-badge" title="NaN/Inf values are drawn as red markers (× NaN, ▲ +Inf, ▼ -Inf)">${nonFinite} NaN/Inf</span>` : '');
    if (!series.length) {
      const anyData = card.metrics.some((m) => st.store.forMetric(m).length);
      clearCard(card, anyData
        ? '<div class="state empty small">All ranks of this chart are hidden: tick a rank on the left.</div>'
        : `<div class="state empty small">No points for this metric yet. ${isLive() ? 'The run is live: they appear as they are logged.' : ''}</div>`, resizer);
      return;
    }
    card.state.innerHTML = '';
    card.plot.hidden = false;
    const overlay = card.metrics.length > 1;
    const pairIndex = new Map();
    const fig = buildChart(series, {
      xAxis: prefs.xAxis, smoothing: prefs.smoothing, logY: prefs.logY,
      withMetric: overlay, withRun: runIds.length > 1,
      colorIndex: (s) => {
        if (!overlay) return ranks.indexOf(s.rank) * Math.max(1, runIds.length) + runIds.indexOf(s.runId);
        const key = `${s.metric}|${s.rank}|${s.runId}`;
        if (!pairIndex.has(key)) pairIndex.set(key, pairIndex.size);
        return pairIndex.get(key);
      },
      height: overlay ? 400 : 240,
    });
    if (!card.chart) {
      card.chart = new Chart(card.plot, (range) => { if (range) zoomDetail(card, range).catch(showError); });
      resizer.observe(card.plot);
    }
    card.chart.draw(fig, ++st.revision);
    card.plot.dataset.points = String(total);
    card.plot.dataset.nonfinite = String(nonFinite);
    card.plot.dataset.revision = String(st.revision);
  }

  /**
   * Zoomed in on a downsampled chart: fetch the visible window again at full detail
   * (start/end by time, with the same max_points) and merge it in, like W&B does.
   */
  async function zoomDetail(card, { min: lo, max: hi }) {
    let changed = false;
    for (const metric of card.metrics) {
      const series = st.store.forMetric(metric);
      const held = series.reduce((n, s) => n + s.length, 0);
      if (!series.length || held >= (st.counts.get(metric) || 0)) continue;   // already complete
      const win = timeWindow(series, prefs.xAxis, lo, hi);
      if (!win) continue;
      const { start, end } = win;
      const resp = await apiGet(`${base}/data`, { data_source: st.source, metrics: metric, start, end, max_points: maxPoints });
      if (st.store.merge(resp.data || []).size) changed = true;
    }
    if (changed) drawCard(card);
  }

  async function downloadCsv(metrics) {
    const resp = await apiGet(`${base}/data`, { data_source: st.source, metrics });
    const rows = (resp.data || []).filter((r) => !st.hiddenRanks.has(r.rank ?? 0));
    const name = `${uid}-${st.source}-${metrics.length === 1 ? metrics[0] : 'metrics'}.csv`.replace(/[^A-Za-z0-9._-]+/g, '_');
    downloadText(name, rowsToCsv(rows));
  }

  // ---- lifecycle ----------------------------------------------------------------------------
  async function tick() {
    if (st.disposed) return;
    const started = performance.now();
    try {
      drawLiveBar();
      if (!st.sources || !st.sources.length) {
        // First load: ask for the likely source's metrics while the sources are listed.
        const source = st.source || 'wandb';
        const prefetched = { source, response: apiGet(`${base}/available`, { data_source: source }) };
        prefetched.response.catch(() => {});       // a wrong guess is simply fetched again
        if (await loadSources()) { await loadAvailable(prefetched); syncUrl(); }
      } else if (isLive() && !st.paused) {
        st.wasLive = true;
        st.graceTicks = undefined;
        st.tick += 1;
        if (st.tick % AVAILABLE_EVERY === 0) { await loadSources(); await loadAvailable(); }
        await pollNew();
      } else if (st.wasLive && !isLive()) {
        // The run just finished: keep catching up a few seconds for the points that the
        // exporter flushed around wandb.finish().
        st.graceTicks = (st.graceTicks ?? FINISH_GRACE_TICKS) - 1;
        if (st.graceTicks <= 0) { st.wasLive = false; st.graceTicks = undefined; }
        if (st.tick++ % AVAILABLE_EVERY === 0 || !st.wasLive) { await loadSources(); await loadAvailable(); }
        await pollNew();
      }
      clearError();
    } catch (err) {
      if (!st.disposed) showError(err);
    }
    // Every LIVE_MS from start to start (the request time is not added to the period).
    if (!st.disposed) timer = setTimeout(tick, Math.max(50, LIVE_MS - (performance.now() - started)));
  }

  const onDetail = () => { drawLiveBar(); drawRankPicker(); };
  ctx.listeners.add(onDetail);
  tick();

  return {
    dispose() {
      st.disposed = true;
      clearTimeout(timer);
      ctx.listeners.delete(onDetail);
      resizer.disconnect();
      for (const card of st.cards.values()) if (card.chart) card.chart.destroy();
    },
  };
}
