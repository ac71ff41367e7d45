// Workload page: header, tabs, Overview tab; the Metrics tab lives in metrics.js.

import { apiGet } from './api.js';
import { metricsTab } from './metrics.js';
import {
  esc, formatCount, formatTime, formatAgo, frameworkLabel, methodBadge, statusBadge, json, DOCTOR_HINT,
} from './util.js';

const DETAIL_REFRESH_MS = 3000;

export function workloadView(el, route) {
  const uid = route.uid;
  const enc = encodeURIComponent(uid);
  const ctx = { uid, detail: null, listeners: new Set() };
  let disposed = false;
  let timer = null;
  let tab = null;

  el.innerHTML = `
    <section class="page">
      <div class="crumbs"><a href="#/">Workloads</a> <span class="muted">/</span> <span>${esc(uid)}</span></div>
      <div class="page-head">
        <h1 class="uid" id="workload-title">${esc(uid)}</h1>
        <span id="workload-status"></span>
        <span id="workload-framework" class="framework"></span>
      </div>
      <nav class="tabs" role="tablist">
        <a role="tab" id="tab-overview" href="#/workloads/${enc}" class="${route.tab === 'overview' ? 'active' : ''}">Overview</a>
        <a role="tab" id="tab-metrics" href="#/workloads/${enc}/metrics" class="${route.tab === 'metrics' ? 'active' : ''}">Metrics</a>
      </nav>
      <div id="tab-body"><div class="state loading">Loading workload…</div></div>
    </section>`;
  const body = el.querySelector('#tab-body');

  function drawHeader() {
    const d = ctx.detail;
    if (!d) return;
    el.querySelector('#workload-status').innerHTML = statusBadge(d.status);
    const det = d.detection;
    const fw = det ? frameworkLabel(det.wrapper, det.base) : '';
    el.querySelector('#workload-framework').innerHTML = det
      ? `${fw ? esc(fw) : ''} ${methodBadge(det.method, det.confidence, det.wrapper || null, det.base || null)}`
      : methodBadge(null);
  }

  async function loadDetail() {
    try {
      ctx.detail = await apiGet(`workloads/${enc}`);
      ctx.error = null;
    } catch (err) {
      ctx.error = err;
    }
    if (disposed) return;
    if (ctx.error && ctx.error.status === 404 && !ctx.detail) {
      if (tab) { tab.dispose(); tab = null; }
      body.innerHTML = `<div class="state empty" id="workload-missing">
        <h2>Workload “${esc(uid)}” not found</h2>
        <p>No exporter has reported this workload uid yet. Check <code>WORKLOAD_UID</code> in the training job
        (by default it is derived from <code>POD_NAME</code>). ${DOCTOR_HINT}</p>
        <p>This page retries every ${DETAIL_REFRESH_MS / 1000} s; <a href="#/">back to all workloads</a>.</p></div>`;
      return;
    }
    if (ctx.error && !ctx.detail) {
      body.innerHTML = `<div class="state error" role="alert">Could not load the workload: ${esc(ctx.error.message)}. Retrying…</div>`;
      return;
    }
    drawHeader();
    if (!tab) tab = route.tab === 'metrics' ? metricsTab(body, ctx) : overviewTab(body, ctx);
    for (const fn of ctx.listeners) fn(ctx.detail);
  }

  // The Metrics tab needs no detail to start fetching: start it at once (first paint),
  // it reads ctx.detail (live status, ranks) when that arrives.
  if (route.tab === 'metrics') tab = metricsTab(body, ctx);

  async function loop() {
    await loadDetail();
    if (!disposed) timer = setTimeout(loop, DETAIL_REFRESH_MS);
  }
  loop();

  return {
    dispose() {
      disposed = true;
      clearTimeout(timer);
      if (tab) tab.dispose();
    },
  };
}

function overviewTab(el, ctx) {
  function draw(d) {
    const det = d.detection;
    const hints = (det && det.hints) || {};
    const indicators = hints.primary_indicators || [];
    const detection = det ? `
      <dl class="kv">
        <dt>Wrapper framework</dt><dd id="det-wrapper">${esc(det.wrapper || '—')}</dd>
        <dt>Base framework</dt><dd id="det-base">${esc(det.base || '—')}</dd>
        <dt>Method</dt><dd id="det-method">${methodBadge(det.method, det.confidence)}</dd>
        <dt>Reported</dt><dd>${esc(formatTime(det.reported_at))}</dd>
        ${indicators.length ? `<dt>Primary indicators</dt><dd>${indicators.map((i) => `<code>${esc(i)}</code>`).join(' ')}</dd>` : ''}
      </dl>
      <details><summary>Hints</summary><pre>${json(hints)}</pre></details>
      ${Object.entries(det.evidence || {}).map(([k, v]) =>
        `<details class="evidence"><summary>Evidence: ${esc(k)}</summary><pre>${json(v)}</pre></details>`).join('')}`
      : `<div class="state empty">No framework detection reported yet. The exporter reports it at <code>wandb.init</code>. ${DOCTOR_HINT}</div>`;

    const runs = d.runs || [];
    const runsHtml = runs.length ? `
      <table class="grid" id="runs-table"><thead><tr><th>Run id</th><th>Project</th><th>Name</th><th>Rank</th>
        <th>Status</th><th>Started</th><th>Finished</th></tr></thead><tbody>
      ${runs.map((r) => `<tr><td><code>${esc(r.run_id || '—')}</code></td><td>${esc(r.project || '—')}</td>
        <td>${esc(r.name || '—')}</td><td class="num">${esc(r.rank ?? '—')}</td><td>${esc(r.status || '—')}</td>
        <td>${esc(formatTime(r.started_at))}</td><td>${esc(formatTime(r.finished_at))}</td></tr>`).join('')}
      </tbody></table>
      ${runs.map((r) => `
        <details class="run-config" ${runs.length === 1 ? 'open' : ''}><summary>Config of ${esc(r.name || r.run_id || 'run')}</summary>
          ${configTree(r.config || {})}
          <details class="raw-json"><summary>JSON</summary><pre>${json(r.config || {})}</pre></details></details>
        ${r.summary && Object.keys(r.summary).length ? `<details class="run-summary" ${runs.length === 1 ? 'open' : ''}><summary>Summary of ${esc(r.name || r.run_id || 'run')}</summary>${summaryTable(r.summary)}</details>` : ''}`).join('')}`
      : '<div class="state empty">No W&amp;B run reported yet (the exporter sends it at <code>wandb.init</code>).</div>';

    el.innerHTML = `
      <div class="cards">
        <section class="card"><h2>Framework detection</h2>${detection}</section>
        <section class="card"><h2>Workload</h2>
          <dl class="kv">
            <dt>Status</dt><dd>${statusBadge(d.status)}</dd>
            <dt>Points</dt><dd id="ov-points">${formatCount(d.points)}</dd>
            <dt>Metrics</dt><dd>${formatCount(Array.isArray(d.metrics) ? d.metrics.length : d.metrics)}</dd>
            <dt>Data sources</dt><dd>${(d.data_sources || []).map((s) => `<code>${esc(s)}</code>`).join(' ') || '—'}</dd>
            <dt>Ranks</dt><dd id="ov-ranks">${(d.ranks || []).map((r) => `<span class="chip">${esc(r)}</span>`).join(' ') || '—'}</dd>
            <dt>Pods</dt><dd id="ov-pods">${(d.pods || []).filter(Boolean).map((p) => `<code>${esc(p)}</code>`).join('<br>') || '—'}</dd>
            <dt>First seen</dt><dd>${esc(formatTime(d.first_seen))}</dd>
            <dt>Last update</dt><dd>${esc(formatTime(d.last_update))} (${esc(formatAgo(d.last_update))})</dd>
          </dl>
          <p><a href="#/workloads/${encodeURIComponent(d.workload_uid || ctx.uid)}/metrics" class="button">Open metrics →</a></p>
        </section>
      </div>
      <section class="card wide"><h2>W&amp;B runs</h2>${runsHtml}</section>`;
  }
  // Redraw only when something visible changed, so open <details> stay open.
  let last = '';
  const listener = (d) => {
    const sig = JSON.stringify([d.detection, d.runs, d.points, d.ranks, d.pods, d.status]);
    if (sig === last) return;
    last = sig;
    const open = new Set([...el.querySelectorAll('details')].filter((x) => x.open).map((x) => x.querySelector('summary').textContent));
    const hadDetails = el.querySelector('details') !== null;
    draw(d);
    if (hadDetails) for (const x of el.querySelectorAll('details')) x.open = open.has(x.querySelector('summary').textContent);
  };
  ctx.listeners.add(listener);
  listener(ctx.detail);
  return { dispose() { ctx.listeners.delete(listener); } };
}

/** A W&B config as a collapsible tree: nested objects are <details> (open at the first level). */
export function configTree(value) {
  const node = (k, v, depth) => {
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) {
      return `<li><details class="tree-node" data-key="${esc(k)}" ${depth < 1 ? 'open' : ''}><summary><span class="k">${esc(k)}</span> <span class="muted">{${Object.keys(v).length}}</span></summary>
        <ul>${Object.entries(v).map(([ck, cv]) => node(ck, cv, depth + 1)).join('')}</ul></details></li>`;
    }
    return `<li class="tree-leaf" data-key="${esc(k)}"><span class="k">${esc(k)}</span>: <span class="v">${esc(typeof v === 'string' ? v : JSON.stringify(v))}</span></li>`;
  };
  const entries = Object.entries(value || {});
  if (!entries.length) return '<p class="muted">No config.</p>';
  return `<ul class="tree config-tree">${entries.map(([k, v]) => node(k, v, 0)).join('')}</ul>`;
}

/** A W&B summary as a key/value table, nested keys flattened to a.b.c (W&B's column names). */
export function summaryTable(summary) {
  const rows = [];
  const put = (prefix, v) => {
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) {
      for (const [k, cv] of Object.entries(v)) put(prefix ? `${prefix}.${k}` : k, cv);
    } else rows.push([prefix, v]);
  };
  put('', summary);
  return `<table class="grid summary-table"><thead><tr><th>Key</th><th>Value</th></tr></thead><tbody>${
    rows.map(([k, v]) => `<tr data-key="${esc(k)}"><td>${esc(k)}</td><td class="num">${esc(typeof v === 'string' ? v : JSON.stringify(v))}</td></tr>`).join('')}</tbody></table>`;
}
