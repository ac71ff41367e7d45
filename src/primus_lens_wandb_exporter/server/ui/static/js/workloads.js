// Workloads list: search, sort, periodic refresh.

import { apiGet } from './api.js';
import { compareHash, compareStateFrom } from './compare.js';
import {
  esc, formatAgo, formatCount, formatTime, countOf, frameworkLabel, methodBadge, statusBadge, DOCTOR_HINT,
} from './util.js';

const REFRESH_MS = 5000;

const COLUMNS = [
  { key: 'workload_uid', label: 'Workload', value: (w) => w.workload_uid },
  { key: 'framework', label: 'Framework', value: (w) => frameworkLabel(w.wrapper, w.base) },
  { key: 'method', label: 'Detection', value: (w) => `${w.method || ''}${w.confidence ?? ''}` },
  { key: 'runs', label: 'Runs', value: (w) => countOf(w.runs), numeric: true },
  { key: 'ranks', label: 'Ranks', value: (w) => countOf(w.ranks), numeric: true },
  { key: 'metrics', label: 'Metrics', value: (w) => countOf(w.metrics), numeric: true },
  { key: 'points', label: 'Points', value: (w) => w.points ?? 0, numeric: true },
  { key: 'last_update', label: 'Last update', value: (w) => w.last_update ?? 0, numeric: true },
  { key: 'status', label: 'Status', value: (w) => w.status || '' },
];

export function workloadsView(el, route) {
  const state = {
    rows: [], loaded: false, error: null,
    search: route.query.get('q') || '',
    sort: route.query.get('sort') || 'last_update',
    order: route.query.get('order') || 'desc',
    picked: new Set(),            // workloads ticked for Compare (kept over the refreshes)
  };
  let timer = null;
  let disposed = false;

  el.innerHTML = `
    <section class="page">
      <div class="page-head">
        <h1>Workloads</h1>
        <input id="workload-search" type="search" placeholder="Search by workload, framework or status"
               value="${esc(state.search)}" aria-label="Search workloads">
        <span class="muted" id="workload-count"></span>
        <button type="button" id="compare-button" disabled title="Tick two or more workloads to overlay their metrics">Compare</button>
        <a href="#/runs" class="button" id="open-runs-table" title="Filter by config, summary, tags; pick columns; group by a config key">Runs table →</a>
      </div>
      <div id="workloads-body"><div class="state loading">Loading workloads…</div></div>
    </section>`;
  const body = el.querySelector('#workloads-body');
  const search = el.querySelector('#workload-search');
  search.addEventListener('input', () => { state.search = search.value; draw(); });
  body.addEventListener('change', (event) => {
    const box = event.target.closest('input.pick-box');
    if (!box) return;
    if (box.checked) state.picked.add(box.dataset.uid); else state.picked.delete(box.dataset.uid);
    drawCompareButton();
  });
  const compareButton = el.querySelector('#compare-button');
  compareButton.addEventListener('click', () => {
    const picked = state.rows.map((w) => w.workload_uid).filter((u) => state.picked.has(u));
    if (picked.length) location.hash = compareHash({ ...compareStateFrom(new URLSearchParams()), workloads: picked });
  });
  function drawCompareButton() {
    const n = state.rows.filter((w) => state.picked.has(w.workload_uid)).length;
    compareButton.disabled = n < 2;
    compareButton.textContent = n ? `Compare ${n}` : 'Compare';
  }
  body.addEventListener('click', (event) => {
    const th = event.target.closest('th[data-key]');
    if (!th) return;
    const key = th.dataset.key;
    if (state.sort === key) state.order = state.order === 'asc' ? 'desc' : 'asc';
    else { state.sort = key; state.order = COLUMNS.find((c) => c.key === key).numeric ? 'desc' : 'asc'; }
    draw();
  });

  async function load() {
    try {
      const resp = await apiGet('workloads');
      state.rows = resp.workloads || [];
      state.error = null;
    } catch (err) {
      state.error = err;
    }
    state.loaded = true;
    if (!disposed) draw();
  }

  function visibleRows() {
    const q = state.search.trim().toLowerCase();
    const rows = state.rows.filter((w) => !q || [w.workload_uid, w.wrapper, w.base, w.method, w.status]
      .some((v) => v && String(v).toLowerCase().includes(q)));
    const col = COLUMNS.find((c) => c.key === state.sort) || COLUMNS[0];
    const sign = state.order === 'asc' ? 1 : -1;
    rows.sort((a, b) => {
      const va = col.value(a), vb = col.value(b);
      const cmp = col.numeric ? (va - vb) : String(va).localeCompare(String(vb));
      return sign * cmp || a.workload_uid.localeCompare(b.workload_uid);
    });
    return rows;
  }

  function draw() {
    const rows = visibleRows();
    el.querySelector('#workload-count').textContent = state.loaded && !state.error
      ? `${rows.length} of ${state.rows.length} workload${state.rows.length === 1 ? '' : 's'}` : '';
    let banner = '';
    if (state.error) {
      banner = `<div class="state error" role="alert">Could not load workloads: ${esc(state.error.message)}
        <br>Retrying every ${REFRESH_MS / 1000} s.</div>`;
      if (!state.rows.length) { body.innerHTML = banner; return; }
    }
    if (!state.rows.length) {
      body.innerHTML = `<div class="state empty" id="workloads-empty">
        <h2>No workloads yet</h2>
        <p>Nothing has reported to this server. ${DOCTOR_HINT}</p>
        <p>Workloads appear here as soon as a training process calls <code>wandb.init</code>.</p></div>`;
      return;
    }
    if (!rows.length) {
      body.innerHTML = `${banner}<div class="state empty">No workload matches “${esc(state.search)}”.</div>`;
      return;
    }
    const head = COLUMNS.map((c) => {
      const active = c.key === state.sort;
      const aria = active ? (state.order === 'asc' ? 'ascending' : 'descending') : 'none';
      const arrow = active ? (state.order === 'asc' ? ' ▲' : ' ▼') : '';
      return `<th data-key="${c.key}" aria-sort="${aria}" class="${c.numeric ? 'num' : ''}" title="Sort by ${esc(c.label)}">${esc(c.label)}${arrow}</th>`;
    }).join('');
    const pickHead = '<th class="pick" title="Tick workloads to compare"></th>';
    const now = Date.now();
    const trs = rows.map((w) => {
      const href = `#/workloads/${encodeURIComponent(w.workload_uid)}`;
      const fw = frameworkLabel(w.wrapper, w.base);
      return `<tr data-uid="${esc(w.workload_uid)}">
        <td class="pick"><input type="checkbox" class="pick-box" data-uid="${esc(w.workload_uid)}" aria-label="Compare ${esc(w.workload_uid)}" ${state.picked.has(w.workload_uid) ? 'checked' : ''}></td>
        <td><a href="${href}" class="uid">${esc(w.workload_uid)}</a></td>
        <td class="framework">${fw ? esc(fw) : '<span class="muted">—</span>'}</td>
        <td>${methodBadge(w.method, w.confidence, w.wrapper || null, w.base || null)}</td>
        <td class="num">${formatCount(countOf(w.runs))}</td>
        <td class="num">${formatCount(countOf(w.ranks))}</td>
        <td class="num">${formatCount(countOf(w.metrics))}</td>
        <td class="num points">${formatCount(w.points)}</td>
        <td title="${esc(formatTime(w.last_update))}">${esc(formatAgo(w.last_update, now))}</td>
        <td>${statusBadge(w.status)}</td></tr>`;
    }).join('');
    drawCompareButton();
    body.innerHTML = `${banner}<table class="grid" id="workloads-table"><thead><tr>${pickHead}${head}</tr></thead><tbody>${trs}</tbody></table>`;
  }

  async function loop() {
    await load();
    if (!disposed) timer = setTimeout(loop, REFRESH_MS);
  }
  loop();

  return { dispose() { disposed = true; clearTimeout(timer); } };
}
