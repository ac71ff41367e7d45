// Entry point: hash routing between the Workloads list and a Workload page.
//   #/                              workloads list   (?q=search&sort=points&order=desc)
//   #/workloads/<uid>               workload overview
//   #/workloads/<uid>/metrics       metrics tab      (?source=wandb&metrics=loss,acc)
//   #/compare?w=<uid>,<uid>&...     workloads overlaid (compare.js: the whole view in the query)
//   #/runs?q=...&sort=...&cols=...  runs table (runs.js: filter, columns, group by, all in the query)

import { workloadsView } from './workloads.js';
import { workloadView } from './workload.js';
import { compareView } from './compare.js';
import { runsView } from './runs.js';
import { initTheme } from './theme.js';

const root = document.getElementById('app');
let current = null;

export function parseRoute(hash) {
  const [path, search] = hash.replace(/^#\/?/, '').split('?');
  const query = new URLSearchParams(search || '');
  const parts = path.split('/').filter(Boolean);
  if (parts[0] === 'compare') return { view: 'compare', query };
  if (parts[0] === 'runs') return { view: 'runs', query };
  if (parts[0] === 'workloads' && parts[1]) {
    return { view: 'workload', uid: decodeURIComponent(parts[1]), tab: parts[2] === 'metrics' ? 'metrics' : 'overview', query };
  }
  return { view: 'workloads', query };
}

function render() {
  if (current) current.dispose();
  const route = parseRoute(location.hash);
  document.title = route.view === 'workload' ? `${route.uid} · Primus Lens`
    : route.view === 'compare' ? 'Compare · Primus Lens' : route.view === 'runs' ? 'Runs · Primus Lens' : 'Workloads · Primus Lens';
  root.innerHTML = '';
  const view = { workload: workloadView, compare: compareView, runs: runsView }[route.view] || workloadsView;
  current = view(root, route);
}

initTheme();
window.addEventListener('hashchange', render);
render();
