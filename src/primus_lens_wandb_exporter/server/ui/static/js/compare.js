// Compare view: several workloads overlaid, one chart per metric, one colour per run, legend by
// run name (W&B's run comparison). Per workload: `metrics/available`, then `runs/data` (the
// points `metrics/data` gives with the same max_points, as columns per series), so each
// workload costs the server what its own Metrics tab costs, in a fifth of the bytes.
//
// The whole view lives in the URL, so a copied URL opens the same view:
//   #/compare?w=<uid>,<uid>&metrics=loss,acc&hide_ranks=1&smoothing=0.6&x=time&logy=1&source=wandb
// (metrics absent: the first DEFAULT_SELECTED of the union of the workloads' metrics).

import { apiGet } from './api.js';
import { buildChart, Chart, chartsAvailable, CHARTS_MISSING, clearCard } from './charts.js';
import { SeriesStore, timeWindow } from './series.js';
import { bindRankPicker, esc, formatCount, namesFrom, namesParam } from './util.js';

const DEFAULT_SELECTED = 24;
const FETCH_GROUP = 12;            // metrics per data request (as the Metrics tab)
const LIVE_MS = 1000;              // refresh period while a compared workload is live (as the Metrics tab)
const STATUS_EVERY = 5;            // live workloads' status (live / finished) checked every 5 ticks
const GRACE_TICKS = 5;             // after a workload finishes: 5 more ticks for its last flushed points

function maxPointsFor(el) {
  const width = el.clientWidth || 1200;
  return Math.max(400, Math.min(2000, Math.round(width * 0.75)));
}

/** The view's state from the hash query (shareable), with defaults. */
export function compareStateFrom(query) {
  const list = (k) => (query.get(k) || '').split(',').filter(Boolean);
  const smoothing = Math.min(0.99, Math.max(0, Number(query.get('smoothing')) || 0));
  return {
    workloads: [...new Set(list('w'))],
    metrics: query.has('metrics') ? namesFrom(query.get('metrics')) : null,
    hiddenRanks: new Set(list('hide_ranks').map(Number).filter(Number.isInteger)),
    smoothing,
    xAxis: query.get('x') === 'time' ? 'time' : 'step',
    logY: query.get('logy') === '1',
    source: query.get('source') || 'wandb',
  };
}

export function compareHash(s) {
  const q = new URLSearchParams();
  q.set('w', s.workloads.join(','));
  if (s.metrics) q.set('metrics', namesParam(s.metrics));
  if (s.hiddenRanks.size) q.set('hide_ranks', [...s.hiddenRanks].sort((a, b) => a - b).join(','));
  if (s.smoothing > 0) q.set('smoothing', String(s.smoothing));
  if (s.xAxis !== 'step') q.set('x', s.xAxis);
  if (s.logY) q.set('logy', '1');
  if (s.source !== 'wandb') q.set('source', s.source);
  return '#/compare?' + q.toString().replace(/%2C/g, ',');
}

/** A workload's W&B config (or summary) flattened to `a.b.c` -> value text; ranks' runs that
 * disagree are joined by " | ". */
function workloadConfig(detail, field = 'config') {
  const out = new Map();
  const put = (prefix, value) => {
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) put(prefix ? `${prefix}.${k}` : k, v);
      return;
    }
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    const seen = out.get(prefix);
    if (seen === undefined) out.set(prefix, text);
    else if (!seen.split(' | ').includes(text)) out.set(prefix, `${seen} | ${text}`);
  };
  for (const run of (detail && detail.runs) || []) if (run[field]) put('', run[field]);
  return out;
}

export function compareView(root, route) {
  const s = compareStateFrom(route.query);
  const st = {
    disposed: false, available: [], counts: new Map(),
    stores: new Map(s.workloads.map((w) => [w, new SeriesStore()])),
    runNames: new Map(),          // `${uid}\u0000${runId}` -> W&B run name
    loaded: new Set(), cards: new Map(), revision: 0,
    live: new Map(),              // uid -> ticks left to poll (Infinity while the workload is live)
    paused: false, tick: 0,
    countsBy: new Map(),          // uid -> Map(metric -> points stored)
  };
  let maxPoints = 1000;
  const resizer = new ResizeObserver((entries) => {
    for (const e of entries) for (const c of st.cards.values()) if (c.plot === e.target && c.chart) c.chart.resize();
  });

  root.innerHTML = `
    <section class="page compare-page">
      <div class="crumbs"><a href="#/">Workloads</a> ›</div>
      <div class="page-head"><h1>Compare ${s.workloads.length} workloads</h1>
        <span class="muted" id="compare-workloads">${s.workloads.map((w) =>
          `<a href="#/workloads/${encodeURIComponent(w)}/metrics">${esc(w)}</a>`).join(' · ')}</span></div>
      <div class="metrics-layout">
        <aside class="controls" id="compare-controls">
          <div class="control-group">
            <div class="control-title">Metrics <span class="muted" id="metric-count"></span></div>
            <input type="search" id="metric-filter" placeholder="Filter metrics" aria-label="Filter metrics">
            <div id="metric-picker" class="checklist"></div>
          </div>
          <div class="control-group"><div class="control-title">Ranks</div>
            <div id="rank-picker" class="checklist ranks"><span class="muted">—</span></div></div>
          <label>X axis <select id="xaxis-select"><option value="step">Step</option><option value="time">Time</option></select></label>
          <label>Smoothing (EMA) <output id="smoothing-value"></output>
            <input type="range" id="smoothing" min="0" max="0.99" step="0.01"></label>
          <label class="inline"><input type="checkbox" id="logy"> Log scale (y)</label>
        </aside>
        <div class="metrics-main"><div id="metrics-state"></div>
          <div class="live-bar" id="compare-live" hidden></div>
          <details class="card config-diff" id="config-diff" open><summary>Config
            <label class="inline"><input type="checkbox" id="diff-only" checked> only keys that differ</label></summary>
            <div id="config-table"></div>
            <div class="control-title">Summary</div><div id="summary-table"></div></details>
          <div id="charts" class="charts"></div></div>
      </div>
    </section>`;
  const $ = (sel) => root.querySelector(sel);
  const chartsEl = $('#charts');
  const stateEl = $('#metrics-state');
  $('#xaxis-select').value = s.xAxis;
  $('#smoothing').value = String(s.smoothing);
  $('#smoothing-value').textContent = s.smoothing.toFixed(2);
  $('#logy').checked = s.logY;

  /** The URL follows every change (replaceState: no history entry, no re-render). */
  function syncUrl() {
    history.replaceState(null, '', compareHash(s));
  }

  const onControls = () => {
    s.xAxis = $('#xaxis-select').value;
    s.smoothing = Number($('#smoothing').value);
    s.logY = $('#logy').checked;
    $('#smoothing-value').textContent = s.smoothing.toFixed(2);
    syncUrl();
    drawAll();
  };
  $('#xaxis-select').addEventListener('change', onControls);
  $('#logy').addEventListener('change', onControls);
  $('#smoothing').addEventListener('input', onControls);
  $('#metric-picker').addEventListener('change', (event) => {
    const box = event.target.closest('input[data-metric]');
    if (!box) return;
    const selected = new Set(selectedMetrics());
    if (box.checked) selected.add(box.dataset.metric); else selected.delete(box.dataset.metric);
    s.metrics = st.available.filter((m) => selected.has(m));
    syncUrl();
    ensureData().catch(showError);
  });
  $('#diff-only').addEventListener('change', drawConfig);
  $('#metric-filter').addEventListener('input', drawPickers);
  bindRankPicker($('#rank-picker'), () => s.hiddenRanks, () => { syncUrl(); drawAll(); });

  function selectedMetrics() {
    return s.metrics ? st.available.filter((m) => s.metrics.includes(m)) : st.available.slice(0, DEFAULT_SELECTED);
  }

  function showError(err) {
    stateEl.innerHTML = `<div class="state error" role="alert">${esc(err.message)}</div>`;
  }

  function allRanks() {
    const ranks = new Set();
    for (const store of st.stores.values()) for (const r of store.ranks()) ranks.add(r);
    return [...ranks].sort((a, b) => a - b);
  }

  function drawPickers() {
    const selected = new Set(selectedMetrics());
    $('#metric-count').textContent = `${selected.size} / ${st.available.length}`;
    const q = $('#metric-filter').value.trim().toLowerCase();   // narrows the checklist only
    $('#metric-picker').innerHTML = st.available.filter((m) => !q || m.toLowerCase().includes(q)).map((m) => `
      <label title="${esc(m)}"><input type="checkbox" data-metric="${esc(m)}" ${selected.has(m) ? 'checked' : ''}>
      <span>${esc(m)}</span></label>`).join('') || '<span class="muted">no metric</span>';
    const ranks = allRanks();
    $('#rank-picker').innerHTML = ranks.map((r) => `
      <label><input type="checkbox" data-rank="${r}" ${s.hiddenRanks.has(r) ? '' : 'checked'}> rank ${r}</label>`).join('')
      || '<span class="muted">—</span>';
  }

  async function load() {
    if (s.workloads.length < 1) {
      stateEl.innerHTML = '<div class="state empty"><h2>Nothing to compare</h2><p>Tick workloads in the <a href="#/">list</a>, then “Compare”.</p></div>';
      return;
    }
    // Each workload's points are asked for as soon as its metric list arrives, not after
    // every workload's list and detail (20 workloads: ~0.2 s earlier). It asks for the
    // metrics that will be drawn: the URL's, or its own first DEFAULT_SELECTED names, a
    // superset of its share of the union's first DEFAULT_SELECTED (a name among the union's
    // first N has fewer than N union names before it, so fewer than N of its own).
    maxPoints = maxPointsFor(chartsEl);
    const prefetched = [];
    const results = await Promise.all(s.workloads.map(async (uid) => {
      const base = `workloads/${encodeURIComponent(uid)}`;
      const detailP = apiGet(base).catch(() => null);
      const avail = await apiGet(`${base}/metrics/available`, { data_source: s.source });
      const own = (avail.metrics || []).map((m) => (typeof m === 'string' ? m : m.name)).sort((a, b) => a.localeCompare(b));
      const wanted = s.metrics ? own.filter((m) => s.metrics.includes(m)) : own.slice(0, DEFAULT_SELECTED);
      for (let i = 0; i < wanted.length; i += FETCH_GROUP) {
        prefetched.push(fetchColumns(uid, wanted.slice(i, i + FETCH_GROUP)));
      }
      return { uid, detail: await detailP, avail };
    }));
    if (st.disposed) return;
    const names = new Set();
    st.configs = new Map(results.map(({ uid, detail }) => [uid, workloadConfig(detail)]));
    st.summaries = new Map(results.map(({ uid, detail }) => [uid, workloadConfig(detail, 'summary')]));
    drawConfig();
    for (const { uid, detail, avail } of results) {
      for (const run of (detail && detail.runs) || []) {
        if (run.name) st.runNames.set(`${uid}\u0000${run.run_id}`, run.name);
      }
      st.countsBy.set(uid, new Map((avail.metrics || []).map((m) => [m.name, m.count || 0])));
      for (const m of avail.metrics || []) {
        const name = typeof m === 'string' ? m : m.name;
        names.add(name);
        st.counts.set(name, (st.counts.get(name) || 0) + (m.count || 0));
      }
    }
    st.available = [...names].sort((a, b) => a.localeCompare(b));
    if (!st.available.length) {
      stateEl.innerHTML = `<div class="state empty"><h2>No metrics in “${esc(s.source)}” for these workloads yet</h2></div>`;
    }
    for (const { uid, detail } of results) if (detail && detail.status === 'live') st.live.set(uid, Infinity);
    drawPickers();
    drawCards();
    await Promise.all(prefetched);
    if (st.disposed) return;
    for (const m of selectedMetrics()) st.loaded.add(m);   // every workload's share is in
    await ensureData();
  }

  /** Config diff and summary: one row per (flattened) key, one column per workload. */
  function drawConfig() {
    if (!st.configs) return;
    $('#config-table').innerHTML = diffTable(st.configs, 'config-diff-table', $('#diff-only').checked, 'W&B config');
    $('#summary-table').innerHTML = diffTable(st.summaries, 'summary-table-grid', false, 'W&B summary');
  }

  function diffTable(byWorkload, id, onlyDiff, what) {
    const keys = new Set();
    for (const c of byWorkload.values()) for (const k of c.keys()) keys.add(k);
    const rows = [...keys].sort((a, b) => a.localeCompare(b)).map((k) => {
      const cells = s.workloads.map((uid) => byWorkload.get(uid).get(k));
      return { k, cells, differs: new Set(cells.map((v) => v ?? '\u0000missing')).size > 1 };
    }).filter((r) => !onlyDiff || r.differs);
    return !keys.size ? `<span class="muted">No ${what} reported.</span>`
      : !rows.length ? '<span class="muted">The configs are identical.</span>'
      : `<table class="grid" id="${id}"><thead><tr><th>key</th>${s.workloads.map((uid) => `<th>${esc(uid)}</th>`).join('')}</tr></thead>
        <tbody>${rows.map((r) => `<tr data-key="${esc(r.k)}" class="${r.differs ? 'differs' : ''}"><td><code>${esc(r.k)}</code></td>${
          r.cells.map((v) => `<td>${v === undefined ? '<span class="muted">—</span>' : esc(v)}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
  }

  /** One workload's downsampled points (runs/data: the same downsampling as metrics/data with
   * max_points, as columns per series, about a fifth of the bytes). */
  function fetchColumns(uid, metrics) {
    return apiGet('runs/data', { workloads: uid, data_source: s.source, metrics, max_points: maxPoints })
      .then((resp) => st.stores.get(uid).mergeColumns(resp.series || []));
  }

  async function ensureData() {
    maxPoints = maxPointsFor(chartsEl);
    const wanted = selectedMetrics().filter((m) => !st.loaded.has(m));
    drawPickers();
    drawCards();
    const requests = [];
    for (let i = 0; i < wanted.length; i += FETCH_GROUP) {
      const group = wanted.slice(i, i + FETCH_GROUP);
      for (const uid of s.workloads) {
        requests.push(fetchColumns(uid, group));
      }
    }
    await Promise.all(requests);
    if (st.disposed) return;
    for (const m of wanted) st.loaded.add(m);
    drawPickers();
    drawAll();
  }

  function drawCards() {
    const metrics = selectedMetrics();
    const wanted = new Set(metrics);
    for (const [m, card] of st.cards) {
      if (!wanted.has(m)) {
        if (card.chart) { resizer.unobserve(card.plot); card.chart.destroy(); }
        card.el.remove(); st.cards.delete(m);
      }
    }
    for (const m of metrics) {
      let card = st.cards.get(m);
      if (!card) {
        const div = document.createElement('section');
        div.className = 'chart-card';
        div.dataset.metric = m;
        div.innerHTML = `<div class="chart-head"><h3 title="${esc(m)}">${esc(m)}</h3><span class="chart-info"></span></div>
          <div class="chart-state"><div class="state loading small">Loading…</div></div><div class="plot"></div>`;
        card = { el: div, plot: div.querySelector('.plot'), info: div.querySelector('.chart-info'), state: div.querySelector('.chart-state') };
        card.plot.dataset.metric = m;
        st.cards.set(m, card);
      }
      chartsEl.appendChild(card.el);     // keeps DOM order = metric order
    }
  }

  function drawAll() {
    drawCards();
    for (const [m, card] of st.cards) drawCard(m, card);
  }

  function drawCard(metric, card) {
    if (!chartsAvailable()) { card.state.innerHTML = `<div class="state error small charts-missing">${esc(CHARTS_MISSING)}</div>`; return; }
    if (!st.loaded.has(metric)) return;
    const owner = new Map();           // Series -> workload uid
    const series = [];
    for (const uid of s.workloads) {
      for (const x of st.stores.get(uid).forMetric(metric)) {
        if (s.hiddenRanks.has(x.rank)) continue;
        owner.set(x, uid);
        series.push(x);
      }
    }
    const total = series.reduce((n, x) => n + x.length, 0);
    card.info.textContent = `${formatCount(total)} points · ${new Set(owner.values()).size} workloads`;
    if (!series.length) {
      clearCard(card, '<div class="state empty small">No points for this metric in the compared workloads (or all ranks hidden).</div>', resizer);
      return;
    }
    card.state.innerHTML = '';
    card.plot.hidden = false;
    // One colour per workload (a workload is one training run; each rank's process is a W&B
    // run of its own, all with the same name): its ranks share it, the legend names the rank.
    const manyRanks = allRanks().length > 1;
    const fig = buildChart(series, {
      xAxis: s.xAxis, smoothing: s.smoothing, logY: s.logY, height: 260,
      colorIndex: (x) => s.workloads.indexOf(owner.get(x)),
      workloadOf: (x) => owner.get(x),
      labelOf: (x) => {
        const uid = owner.get(x);
        const name = st.runNames.get(`${uid}\u0000${x.runId}`) || x.runId || uid;
        return manyRanks ? `${name} · rank ${x.rank}` : name;
      },
    });
    if (!card.chart) {
      card.chart = new Chart(card.plot, (range) => { if (range) zoomDetail(metric, card, range).catch(showError); });
      resizer.observe(card.plot);
    }
    card.chart.draw(fig, ++st.revision);
    card.plot.dataset.revision = String(st.revision);
  }

  /** Zoomed in: each workload whose series of this metric are downsampled gets the window again
   * at full detail (start/end, the same max_points), as in the Metrics tab. */
  async function zoomDetail(metric, card, { min: lo, max: hi }) {
    const fetched = await Promise.all(s.workloads.map(async (uid) => {
      const store = st.stores.get(uid);
      const series = store.forMetric(metric);
      const held = series.reduce((n, x) => n + x.length, 0);
      if (!series.length || held >= (st.countsBy.get(uid)?.get(metric) || 0)) return false;   // complete
      const win = timeWindow(series, s.xAxis, lo, hi);
      if (!win) return false;
      const resp = await apiGet(`workloads/${encodeURIComponent(uid)}/metrics/data`,
        { data_source: s.source, metrics: metric, start: win.start, end: win.end, max_points: maxPoints });
      return store.merge(resp.data || []).size > 0;
    }));
    if (!st.disposed && fetched.some(Boolean)) drawCard(metric, card);
  }

  // ---- live refresh: while a compared workload is live, the rows after the last row held
  // (after_row, as the Metrics tab) are merged in place every second; the charts keep their zoom.
  let liveTimer = null;
  $('#compare-live').addEventListener('click', (event) => {
    if (event.target.id !== 'compare-live-toggle') return;
    st.paused = !st.paused;
    drawLiveBar();
  });

  function drawLiveBar() {
    const bar = $('#compare-live');
    const n = [...st.live.values()].filter((v) => v === Infinity).length;
    bar.hidden = !n;
    if (!n) { delete bar.dataset.live; return; }
    bar.dataset.live = st.paused ? 'paused' : 'on';
    bar.innerHTML = st.paused
      ? '<span class="badge muted">paused</span> Live refresh paused. <button type="button" id="compare-live-toggle">Resume</button>'
      : `<span class="badge status live">● live</span> ${n} of ${s.workloads.length} workloads live: new points every ${LIVE_MS / 1000} s. <button type="button" id="compare-live-toggle">Pause</button>`;
  }

  async function refreshStatus() {
    await Promise.all([...st.live.keys()].map(async (uid) => {
      const d = await apiGet(`workloads/${encodeURIComponent(uid)}`).catch(() => null);
      if (!d || st.disposed) return;
      if (d.status === 'live') st.live.set(uid, Infinity);
      else if (st.live.get(uid) === Infinity) st.live.set(uid, GRACE_TICKS);
      for (const run of d.runs || []) if (run.name) st.runNames.set(`${uid}\u0000${run.run_id}`, run.name);
    }));
  }

  async function pollNew() {
    const metrics = selectedMetrics().filter((m) => st.loaded.has(m));
    const changed = new Set();
    await Promise.all([...st.live.keys()].map(async (uid) => {
      const store = st.stores.get(uid);
      const withData = metrics.filter((m) => store.forMetric(m).length);
      if (!withData.length) return;
      const resp = await apiGet(`workloads/${encodeURIComponent(uid)}/metrics/data`,
        { data_source: s.source, metrics: withData, after_row: store.minLastRow(withData) });
      if (!st.disposed) for (const m of store.merge(resp.data || [])) changed.add(m);
    }));
    if (st.disposed) return;
    for (const m of changed) { const card = st.cards.get(m); if (card) drawCard(m, card); }
  }

  async function liveTick() {
    if (st.disposed) return;
    const started = performance.now();
    try {
      if (st.live.size && !st.paused) {
        st.tick += 1;
        if (st.tick % STATUS_EVERY === 0) await refreshStatus();
        await pollNew();
        for (const [uid, left] of st.live) {
          if (left === Infinity) continue;
          if (left <= 1) st.live.delete(uid); else st.live.set(uid, left - 1);
        }
      }
    } catch (err) {
      if (!st.disposed) showError(err);
    }
    drawLiveBar();
    if (!st.disposed) liveTimer = setTimeout(liveTick, Math.max(50, LIVE_MS - (performance.now() - started)));
  }

  load().then(() => { if (!st.disposed) { drawLiveBar(); liveTick(); } })
    .catch((err) => { if (!st.disposed) showError(err); });

  return {
    dispose() {
      st.disposed = true;
      clearTimeout(liveTimer);
      resizer.disconnect();
      for (const card of st.cards.values()) if (card.chart) card.chart.destroy();
    },
  };
}
