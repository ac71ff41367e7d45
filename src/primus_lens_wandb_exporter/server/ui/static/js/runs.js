// Runs table (W&B's runs table): one row per workload (a training job; its ranks are W&B runs of
// their own), shown through its rank-0 run. Filtering, sorting, grouping and paging run on the
// server (`GET api/v1/runs`, docs/protocol.md), so 5,000 runs cost one page of rows here.
//
// The whole view lives in the URL (shareable):
//   #/runs?q=config.lr>=0.001 tags:sweep&sort=config.lr&order=asc&cols=config.lr,summary.loss&group=config.optimizer&page=2

import { apiGet } from './api.js';
import { compareHash, compareStateFrom } from './compare.js';
import { esc, formatAgo, formatCount, formatTime, frameworkLabel } from './util.js';

const PAGE = 100;
const REFRESH_MS = 10000;
const FILTER_DELAY_MS = 250;

/** The fixed columns: [sort key, label, cell]. */
const FIXED = [
  ['project', 'Project', (r) => esc(r.project ?? '—')],
  ['name', 'Run name', (r) => `<a href="#/workloads/${encodeURIComponent(r.workload_uid)}" class="run-name">${esc(r.name || r.run_id || r.workload_uid)}</a>`],
  ['tags', 'Tags', (r) => (r.tags || []).map((t) => `<span class="chip tag">${esc(t)}</span>`).join(' ')],
  ['state', 'State', (r) => `<span class="badge run-state" data-state="${esc(r.state || '')}">${esc(r.state || '—')}</span>`],
  // A detection that found no framework (a plain wandb script) is not "unknown": W&B only.
  ['framework', 'Framework', (r) => esc(frameworkLabel(r.wrapper, r.base))
    || (r.method ? '<span class="badge muted wandb-only">W&amp;B only</span>' : '<span class="muted">—</span>')],
  ['step', 'Last step', (r) => (r.last_step === null || r.last_step === undefined ? '—' : formatCount(r.last_step)), true],
  ['updated', 'Updated', (r) => `<span title="${esc(formatTime(r.updated_at))}">${esc(formatAgo(r.updated_at))}</span>`, true],
];
const GROUPABLE = ['project', 'state', 'framework', 'group'];

export function runsStateFrom(query) {
  const cols = (query.get('cols') || '').split(',').filter((c) => /^(config|summary)\.[^,]+$/.test(c));
  return {
    q: query.get('q') || '',
    sort: query.get('sort') || 'updated',
    order: query.get('order') === 'asc' ? 'asc' : 'desc',
    cols: [...new Set(cols)],
    group: query.get('group') || '',
    page: Math.max(0, Number(query.get('page')) || 0),
  };
}

export function runsHash(s) {
  const q = new URLSearchParams();
  if (s.q) q.set('q', s.q);
  if (s.sort !== 'updated') q.set('sort', s.sort);
  if (s.order !== 'desc') q.set('order', s.order);
  if (s.cols.length) q.set('cols', s.cols.join(','));
  if (s.group) q.set('group', s.group);
  if (s.page) q.set('page', String(s.page));
  const text = q.toString().replace(/%2C/g, ',');
  return '#/runs' + (text ? '?' + text : '');
}

function cellValue(v) {
  if (v === null || v === undefined) return '<span class="muted">—</span>';
  if (typeof v === 'number') return esc(Number.isInteger(v) ? String(v) : v.toPrecision(6).replace(/\.?0+(e|$)/, '$1'));
  return esc(typeof v === 'string' ? v : JSON.stringify(v));
}

export function runsView(el, route) {
  const s = runsStateFrom(route.query);
  const st = { answer: null, error: null, keys: { config: [], summary: [] }, picked: new Set(), seq: 0, disposed: false };
  let timer = null;
  let filterTimer = null;

  el.innerHTML = `
    <section class="page">
      <div class="page-head">
        <h1>Runs</h1>
        <input id="runs-filter" type="search" value="${esc(s.q)}" spellcheck="false"
               placeholder="Filter: config.lr>=0.001 tags:sweep framework:lightning summary.loss<0.5 name:~bert"
               aria-label="Filter runs" title="field:value, field!=value, field:~text, config.key>=number; plain words search names (see the API docs)">
        <label class="inline">Group by <select id="group-by" aria-label="Group by"></select></label>
        <details id="column-chooser" class="chooser"><summary>Columns</summary>
          <input type="search" id="column-search" placeholder="config.… / summary.…" aria-label="Find a column">
          <div id="column-list" class="checklist"></div></details>
        <button type="button" id="runs-compare" disabled title="Tick two or more runs to overlay their metrics">Compare</button>
        <span class="muted" id="runs-count"></span>
      </div>
      <div id="runs-filter-error" class="filter-error" role="alert" hidden></div>
      <div id="runs-body"><div class="state loading">Loading runs…</div></div>
    </section>`;
  const body = el.querySelector('#runs-body');
  const filter = el.querySelector('#runs-filter');
  const groupSel = el.querySelector('#group-by');
  const colList = el.querySelector('#column-list');
  const colSearch = el.querySelector('#column-search');
  const compareButton = el.querySelector('#runs-compare');

  function pushUrl() {
    history.replaceState(null, '', runsHash(s));
  }
  function change(reload = true) {
    pushUrl();
    if (reload) load();
  }

  filter.addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => { s.q = filter.value.trim(); s.page = 0; change(); }, FILTER_DELAY_MS);
  });
  filter.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter') return;
    clearTimeout(filterTimer);
    s.q = filter.value.trim(); s.page = 0; change();
  });
  groupSel.addEventListener('change', () => { s.group = groupSel.value; s.page = 0; change(); });
  colSearch.addEventListener('input', drawChooser);
  colList.addEventListener('change', (event) => {
    const box = event.target.closest('input[data-col]');
    if (!box) return;
    const col = box.dataset.col;
    s.cols = box.checked ? [...s.cols.filter((c) => c !== col), col] : s.cols.filter((c) => c !== col);
    change();
  });
  body.addEventListener('click', (event) => {
    const th = event.target.closest('th[data-sort]');
    if (th) {
      const key = th.dataset.sort;
      if (s.sort === key) s.order = s.order === 'asc' ? 'desc' : 'asc';
      else { s.sort = key; s.order = ['step', 'updated'].includes(key) || key.includes('.') ? 'desc' : 'asc'; }
      s.page = 0;
      change();
      return;
    }
    const pager = event.target.closest('button[data-page]');
    if (pager) { s.page = Math.max(0, s.page + Number(pager.dataset.page)); change(); }
  });
  body.addEventListener('change', (event) => {
    const box = event.target.closest('input.pick-box');
    if (!box) return;
    if (box.checked) st.picked.add(box.dataset.uid); else st.picked.delete(box.dataset.uid);
    drawCompareButton();
  });
  compareButton.addEventListener('click', () => {
    if (st.picked.size >= 2) location.hash = compareHash({ ...compareStateFrom(new URLSearchParams()), workloads: [...st.picked] });
  });
  function drawCompareButton() {
    compareButton.disabled = st.picked.size < 2;
    compareButton.textContent = st.picked.size ? `Compare ${st.picked.size}` : 'Compare';
  }

  function drawGroupSelect() {
    const keys = [...st.keys.config.map((k) => 'config.' + k), ...st.keys.summary.map((k) => 'summary.' + k)];
    if (s.group && !GROUPABLE.includes(s.group) && !keys.includes(s.group)) keys.unshift(s.group);
    groupSel.innerHTML = '<option value="">(none)</option>'
      + GROUPABLE.map((g) => `<option value="${g}">${g}</option>`).join('')
      + keys.map((k) => `<option value="${esc(k)}">${esc(k)}</option>`).join('');
    groupSel.value = s.group;
  }

  function drawChooser() {
    const needle = colSearch.value.trim().toLowerCase();
    const all = [...st.keys.config.map((k) => 'config.' + k), ...st.keys.summary.map((k) => 'summary.' + k)];
    for (const c of s.cols) if (!all.includes(c)) all.push(c);
    colList.innerHTML = all.filter((c) => !needle || c.toLowerCase().includes(needle)).map((c) =>
      `<label><input type="checkbox" data-col="${esc(c)}" ${s.cols.includes(c) ? 'checked' : ''}> ${esc(c)}</label>`).join('')
      || '<span class="muted">no config or summary keys reported yet</span>';
  }

  async function loadKeys() {
    try {
      st.keys = await apiGet('runs/keys');
    } catch { /* the chooser stays with the URL's columns */ }
    if (st.disposed) return;
    drawChooser();
    drawGroupSelect();
  }

  async function load() {
    const seq = ++st.seq;
    clearTimeout(timer);
    // columns: only the chosen keys (',' = none: apiGet leaves an empty value out, and without
    // `columns` the server sends every row's whole config and summary, which the table never shows).
    const params = { q: s.q, sort: s.sort, order: s.order, limit: PAGE, offset: s.page * PAGE, columns: s.cols.join(',') || ',' };
    if (s.group) params.group_by = s.group;
    let answer = null;
    let error = null;
    try {
      answer = await apiGet('runs', params);
    } catch (err) {
      error = err;
    }
    if (st.disposed || seq !== st.seq) return;   // a newer request is on its way
    if (answer) st.answer = answer;
    st.error = error;
    draw();
    timer = setTimeout(load, REFRESH_MS);
  }

  function draw() {
    const errBox = el.querySelector('#runs-filter-error');
    const bad = st.error && st.error.status === 400;
    errBox.hidden = !bad;
    errBox.textContent = bad ? st.error.message : '';
    filter.classList.toggle('invalid', !!bad);
    if (st.error && !bad && !st.answer) {
      body.innerHTML = `<div class="state error" role="alert">Could not load runs: ${esc(st.error.message)}. Retrying…</div>`;
      return;
    }
    const a = st.answer;
    if (!a) {
      // A shared URL whose filter the server refuses: say so instead of "Loading…".
      if (bad) body.innerHTML = '<div class="state empty" id="runs-empty">Fix the filter (the message above names the term) to see runs.</div>';
      return;
    }
    const rows = a.runs || [];
    el.querySelector('#runs-count').textContent = `${formatCount(a.total_count)} run${a.total_count === 1 ? '' : 's'}`;
    if (!rows.length) {
      body.innerHTML = `<div class="state empty" id="runs-empty">${s.q ? `No run matches <code>${esc(s.q)}</code>.` : 'No runs reported yet.'}</div>`;
      body.dataset.q = s.q;
      return;
    }
    const th = (key, label, numeric) => {
      const active = s.sort === key;
      const aria = active ? (s.order === 'asc' ? 'ascending' : 'descending') : 'none';
      return `<th data-sort="${esc(key)}" aria-sort="${aria}" class="${numeric ? 'num' : ''}" title="Sort by ${esc(label)}">${esc(label)}${active ? (s.order === 'asc' ? ' ▲' : ' ▼') : ''}</th>`;
    };
    const head = '<th class="pick"></th>'
      + FIXED.map(([k, label, , num]) => (k === 'tags' ? '<th>Tags</th>' : th(k, label, num))).join('')
      + s.cols.map((c) => th(c, c, true)).join('');
    const ncols = 1 + FIXED.length + s.cols.length;
    const counts = new Map((a.groups || []).map((g) => [JSON.stringify(g.value), g.count]));
    let lastGroup;
    const trs = [];
    for (const r of rows) {
      if (s.group) {
        const g = JSON.stringify(r.group_value ?? null);
        if (g !== lastGroup) {
          lastGroup = g;
          const label = r.group_value === null || r.group_value === undefined ? '(no value)' : cellValue(r.group_value);
          trs.push(`<tr class="group-row" data-group="${esc(g)}"><td colspan="${ncols}"><b>${esc(s.group)}</b> = ${label} <span class="muted">· ${formatCount(counts.get(g) ?? 0)} run${counts.get(g) === 1 ? '' : 's'}</span></td></tr>`);
        }
      }
      const values = r.values || {};
      trs.push(`<tr data-uid="${esc(r.workload_uid)}">
        <td class="pick"><input type="checkbox" class="pick-box" data-uid="${esc(r.workload_uid)}" aria-label="Compare ${esc(r.name || r.workload_uid)}" ${st.picked.has(r.workload_uid) ? 'checked' : ''}></td>
        ${FIXED.map(([k, , cell, num]) => `<td class="col-${k}${num ? ' num' : ''}">${cell(r)}</td>`).join('')}
        ${s.cols.map((c) => `<td class="num" data-col="${esc(c)}">${cellValue(values[c])}</td>`).join('')}</tr>`);
    }
    const first = a.offset + 1;
    const last = a.offset + rows.length;
    const pager = a.total_count > PAGE ? `<div class="pager">
        <button type="button" data-page="-1" ${a.offset ? '' : 'disabled'}>← Previous</button>
        <span class="muted">${formatCount(first)}–${formatCount(last)} of ${formatCount(a.total_count)}</span>
        <button type="button" data-page="1" ${last < a.total_count ? '' : 'disabled'}>Next →</button></div>` : '';
    body.innerHTML = `<table class="grid" id="runs-table" data-q="${esc(s.q)}"><thead><tr>${head}</tr></thead><tbody>${trs.join('')}</tbody></table>${pager}`;
    body.dataset.q = s.q;
    drawCompareButton();
  }

  drawGroupSelect();
  drawChooser();
  loadKeys();
  load();
  return { dispose() { st.disposed = true; clearTimeout(timer); clearTimeout(filterTimer); } };
}
