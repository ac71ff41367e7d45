"""First meaningful paint of the Metrics tab for a big workload, in headless Chromium.

A workload with 10 metrics x 100,000 points (ingested through the real API in
batches) on the real server; the page is opened at ``#/workloads/<uid>/metrics`` and
the clock runs from navigation start until all 10 charts are drawn (every plot element
drawn by uPlot, measured in the page at an animation frame).

- cold:   a fresh browser context (page, its modules and uPlot downloaded and compiled)
- warm:   reload in the same context (HTTP cache)
- hot:    the next reload (V8 has cached the compiled code by then)
- in-app: from the Workloads list to the Metrics tab (hash navigation, as a click does)

Target: <= 1.5 s.  Needs uPlot installed (`npm ci` in the repository root).

Two more measurements (issue 14):

- compare: ``#/compare`` of ``--compare-workloads`` (20) workloads x ``--compare-metrics`` (10)
  metrics x ``--compare-points`` (100,000) points, cold first paint (fresh context; target <= 1.5 s);
- runs table: ``--table-runs`` (5,000) workloads with config/summary/tags; the time from pressing
  Enter in the filter box to the filtered table drawn (target <= 100 ms), and the server's
  ``GET /api/v1/runs`` time for the same filters (HTTP, and the store's query in-process, SQLite).

``--only metrics|compare|runs`` runs one of them; ``--quick`` runs all three at a tiny size
(a smoke test, well under a minute).

    python benchmarks/bench_ui_first_paint.py [--metrics 10] [--points 100000] [--runs 5]
    python benchmarks/bench_ui_first_paint.py --only compare --runs 3
    python benchmarks/bench_ui_first_paint.py --only runs --runs 3 [--table-pg]
    python benchmarks/bench_ui_first_paint.py --quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from helpers.ui import LensServer, server_available  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WORKLOAD = "bench-ui-first-paint"
BATCH = 50_000
TARGET_S = 1.5

PAINTED = """(n) => {
    const done = document.querySelectorAll('.plot[data-revision]').length >= n;
    if (done && window.__painted === undefined) window.__painted = performance.now();
    return done;
}"""


def ingest(server: LensServer, metrics: int, points: int) -> float:
    t0 = time.time() - points
    started = time.perf_counter()
    for m in range(metrics):
        name = f"train/metric_{m:02d}"
        for lo in range(0, points, BATCH):
            pts = [{"name": name, "value": math.exp(-s / 30_000) + 0.05 * math.sin(s / 50 + m),
                    "step": s, "timestamp": t0 + s} for s in range(lo, min(points, lo + BATCH))]
            server.metrics(WORKLOAD, pts, run_id="bench")
    # A finished run: the page draws what is stored and does not poll (no live refresh).
    server.run_event(WORKLOAD, "bench", "finished", status="finished", exit_code=0)
    return time.perf_counter() - started


def main_thread_seconds(cdp) -> dict:
    """Renderer main-thread work so far (Chrome's Performance domain): tasks and script."""
    values = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {"task": values.get("TaskDuration", 0.0), "script": values.get("ScriptDuration", 0.0)}


def measure_load(page, cdp, url: str, metrics: int, reload: bool) -> dict:
    """Navigation start -> all charts drawn, for a page load (goto or reload)."""
    if reload:
        page.reload()
    else:
        page.goto(url)
    page.wait_for_function(PAINTED, arg=metrics, polling="raf", timeout=60_000)
    busy = main_thread_seconds(cdp)
    return dict(busy, **page.evaluate("""() => {
        const res = performance.getEntriesByType('resource');
        const data = res.filter(r => r.name.includes('/metrics/data'));
        const lib = res.find(r => r.name.includes('/static/vendor/uPlot'));
        return {paint_ms: window.__painted,
                lib_ms: lib ? lib.responseEnd - lib.startTime : null,
                data_requests: data.length,
                data_last_ms: data.length ? Math.max(...data.map(r => r.responseEnd)) : null,
                points_drawn: [...document.querySelectorAll('.plot')].reduce((n, d) => n + Number(d.dataset.points || 0), 0)};
    }"""))


def measure_in_app(page, base: str, metrics: int) -> float:
    """From the Workloads list (app already loaded) to all charts drawn, as a click does it."""
    page.goto(base + "/#/")
    page.wait_for_selector(f'#workloads-table tr[data-uid="{WORKLOAD}"]')
    page.wait_for_function("() => window.uPlot !== undefined")
    started = page.evaluate("""(uid) => { window.__painted = undefined; const t = performance.now();
                                          location.hash = `#/workloads/${uid}/metrics`; return t; }""", WORKLOAD)
    page.wait_for_function(PAINTED, arg=metrics, polling="raf", timeout=60_000)
    return page.evaluate("() => window.__painted") - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compare-workloads", type=int, default=20)
    parser.add_argument("--compare-metrics", type=int, default=10)
    parser.add_argument("--compare-points", type=int, default=100_000)
    parser.add_argument("--table-runs", type=int, default=5000)
    parser.add_argument("--only", choices=["metrics", "compare", "runs"])
    parser.add_argument("--table-pg", action="store_true",
                        help="also time the runs query on PostgreSQL (PRIMUS_LENS_TEST_POSTGRES_DSN)")
    parser.add_argument("--quick", action="store_true", help="every measurement at a tiny size (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.metrics, args.points, args.runs = 2, 2000, 1
        args.compare_workloads, args.compare_metrics, args.compare_points, args.table_runs = 3, 2, 2000, 60
    reason = server_available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    from primus_lens_wandb_exporter.server.ui import UPLOT, vendor_dir

    if vendor_dir() is None:
        print(f"cannot run: {UPLOT.missing_message()}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")
    if args.only in (None, "compare"):
        bench_compare(args, sync_playwright)
    if args.only in (None, "runs"):
        bench_runs_table(args, sync_playwright)
        if args.table_pg:
            bench_runs_table_pg(args)
    if args.only not in (None, "metrics"):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        server = LensServer.start(Path(tmp))
        try:
            took = ingest(server, args.metrics, args.points)
            total = args.metrics * args.points
            print(f"ingested {total:,} points ({args.metrics} metrics x {args.points:,}) in {took:.1f} s")
            url = f"{server.url}/#/workloads/{WORKLOAD}/metrics"
            results = {"cold": [], "warm": [], "hot": [], "in-app": []}
            busy = {"cold": []}
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                for i in range(args.runs):
                    context = browser.new_context(viewport={"width": 1600, "height": 1000})
                    page = context.new_page()
                    cdp = context.new_cdp_session(page)
                    cdp.send("Performance.enable")
                    cold = measure_load(page, cdp, url, args.metrics, reload=False)
                    cdp.send("Performance.disable")
                    cdp.send("Performance.enable")     # counters restart for the next load
                    warm = measure_load(page, cdp, url, args.metrics, reload=True)
                    hot = measure_load(page, cdp, url, args.metrics, reload=True)
                    in_app = measure_in_app(page, server.url, args.metrics)
                    for key, ms in (("cold", cold["paint_ms"]), ("warm", warm["paint_ms"]),
                                    ("hot", hot["paint_ms"]), ("in-app", in_app)):
                        results[key].append(ms / 1000)
                    busy["cold"].append(cold["task"])
                    print(f"run {i + 1}: cold {cold['paint_ms']:.0f} ms (main thread busy {cold['task'] * 1000:.0f} ms, "
                          f"script {cold['script'] * 1000:.0f} ms; uPlot downloaded in "
                          f"{cold['lib_ms']:.0f} ms, {cold['data_requests']} data requests done at "
                          f"{cold['data_last_ms']:.0f} ms, {cold['points_drawn']:,} points drawn) | "
                          f"warm {warm['paint_ms']:.0f} ms | hot {hot['paint_ms']:.0f} ms | in-app {in_app:.0f} ms")
                    context.close()
                browser.close()
        finally:
            server.stop()
    medians = {k: statistics.median(v) for k, v in results.items()}
    print(f"cold load: median main-thread work {statistics.median(busy['cold']):.2f} s "
          "(the rest of the wall time is waiting: network, and the CPU shared with other processes)")
    print(f"charts: uPlot from {vendor_dir()}")
    print(f"first meaningful paint, {args.metrics} charts x {args.points:,} points (median of {args.runs}): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items())
          + f"; target {TARGET_S} s: " + ", ".join(f"{k} {'meets' if v <= TARGET_S else 'MISSES'}"
                                                   for k, v in medians.items()))
    return 0


def _post_raw(server: LensServer, path: str, body: bytes) -> None:
    import requests

    r = requests.post(server.api + path, data=body, timeout=300,
                      headers={"Content-Type": "application/json", **server.headers})
    assert r.status_code == 200, r.text[:300]


def bench_compare(args, sync_playwright) -> None:
    """Cold first paint of #/compare over many big workloads."""
    n_w, n_m, n_p = args.compare_workloads, args.compare_metrics, args.compare_points
    with tempfile.TemporaryDirectory() as tmp:
        server = LensServer.start(Path(tmp))
        try:
            started = time.perf_counter()
            t0 = time.time() - n_p
            uids = [f"bench-compare-{i:02d}" for i in range(n_w)]
            for m in range(n_m):
                name = f"train/metric_{m:02d}"
                for lo in range(0, n_p, BATCH):
                    pts = [{"name": name, "value": math.exp(-s / 30_000) + 0.05 * math.sin(s / 50 + m),
                            "step": s, "timestamp": t0 + s} for s in range(lo, min(n_p, lo + BATCH))]
                    # One encoding per batch, sent for every workload (only the uid differs).
                    body = json.dumps({"source": "wandb", "workload_uid": "\x00UID\x00", "pod_name": "p",
                                       "run_id": "bench", "rank": 0, "timestamp": time.time(), "metrics": pts})
                    for uid in uids:
                        _post_raw(server, "/wandb/metrics", body.replace("\\u0000UID\\u0000", uid).encode())
            for i, uid in enumerate(uids):
                server.run_event(uid, "bench", "finished", status="finished", exit_code=0, name=f"lr-{i}",
                                 project="bench", config={"lr": 0.001 * (i + 1)})
            print(f"compare: ingested {n_w} workloads x {n_m} metrics x {n_p:,} points "
                  f"({n_w * n_m * n_p:,}) in {time.perf_counter() - started:.1f} s")
            url = f"{server.url}/#/compare?w={','.join(uids)}"
            cold = []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                for i in range(args.runs):
                    context = browser.new_context(viewport={"width": 1600, "height": 1000})
                    page = context.new_page()
                    page.goto(url)
                    page.wait_for_function(PAINTED, arg=n_m, polling="raf", timeout=120_000)
                    got = page.evaluate("""() => ({paint_ms: window.__painted,
                        requests: performance.getEntriesByType('resource').filter(r => r.name.includes('/runs/data')).length,
                        points: [...document.querySelectorAll('.plot')].reduce((n, d) => n + (d.__lens ? d.__lens.series
                            .reduce((k, t) => k + t.x.length, 0) : 0), 0)})""")
                    cold.append(got["paint_ms"] / 1000)
                    print(f"compare run {i + 1}: cold first paint {got['paint_ms']:.0f} ms "
                          f"({got['requests']} runs/data requests, {got['points']:,} points drawn)")
                    context.close()
                browser.close()
        finally:
            server.stop()
    med = statistics.median(cold)
    print(f"compare first paint, {n_w} workloads x {n_m} metrics x {n_p:,} points (median of {args.runs}): "
          f"cold {med:.2f} s; target {TARGET_S} s: {'meets' if med <= TARGET_S else 'MISSES'}")


TABLE_FILTERS = ["config.lr>=0.01", "tags:sweep config.optimizer:sgd", "summary.loss<0.3 project:proj-3",
                 "name:~run-12", "config.batch_size=64 summary.acc>0.5"]
TABLE_TARGET_MS = 100.0


def _seed_runs(server: LensServer, n: int) -> None:
    """``n`` finished workloads, one W&B run each, with config, summary and tags (/wandb/batch)."""
    started = time.perf_counter()
    for lo in range(0, n, 500):
        runs = [{"source": "wandb", "workload_uid": f"bench-run-{i:05d}", "run_id": f"r{i}", "rank": 0,
                 "pod_name": "p", "event": "finished", "status": "finished", "project": f"proj-{i % 7}",
                 "name": f"run-{i}", "tags": ["sweep"] if i % 3 else ["ablation"],
                 "config": {"lr": 10 ** -(1 + i % 4), "optimizer": ["adam", "sgd", "adamw"][i % 3],
                            "batch_size": [32, 64, 128][i % 3], "model": {"layers": i % 12, "width": 256}},
                 "summary": {"loss": (i % 100) / 100, "acc": 1 - (i % 100) / 100, "epoch": i % 10}}
                for i in range(lo, min(n, lo + 500))]
        _post_raw(server, "/wandb/batch", json.dumps({"run": runs}).encode())
    print(f"runs table: reported {n:,} runs in {time.perf_counter() - started:.1f} s ({server.process.db_kind})")


def _query_times(server: LensServer, repeat: int):
    """Median ms of ``GET /api/v1/runs`` per filter, over HTTP and in the store (in-process)."""
    import requests

    from primus_lens_wandb_exporter.server.storage import open_store
    from primus_lens_wandb_exporter.server.storage.runs_filter import parse

    http, inproc = {}, {}
    store = open_store(server.process.db_url)
    try:
        for q in TABLE_FILTERS:
            hs, ps = [], []
            for _ in range(max(3, repeat)):
                t = time.perf_counter()
                r = requests.get(server.api + "/runs", params={"q": q, "limit": 100}, timeout=60,
                                 headers=server.headers)
                hs.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
                t = time.perf_counter()
                store.list_runs(parse(q), limit=100, columns=[])
                ps.append(time.perf_counter() - t)
            http[q], inproc[q] = statistics.median(hs) * 1000, statistics.median(ps) * 1000
    finally:
        store.close()
    return http, inproc


def bench_runs_table_pg(args) -> None:
    """The server's side of the runs table on PostgreSQL (``--table-pg``)."""
    from helpers.server import LensServer as ServerProcess, create_pg_database, drop_pg_database

    url = create_pg_database(prefix="lens_bench_")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            server = LensServer(ServerProcess(url, Path(tmp) / "server.log").start())
            try:
                _seed_runs(server, args.table_runs)
                http, inproc = _query_times(server, args.runs)
            finally:
                server.stop()
    finally:
        drop_pg_database(url)
    for q in TABLE_FILTERS:
        print(f"runs table, {args.table_runs:,} runs, filter {q!r}: server GET /runs {http[q]:.1f} ms over HTTP, "
              f"{inproc[q]:.1f} ms in the store (PostgreSQL)")


def bench_runs_table(args, sync_playwright) -> None:
    """The runs table over many workloads: filter applied in the browser, and the server's query."""
    n = args.table_runs
    with tempfile.TemporaryDirectory() as tmp:
        server = LensServer.start(Path(tmp))
        try:
            _seed_runs(server, n)
            http, inproc = _query_times(server, args.runs)
            browser_ms = {q: [] for q in TABLE_FILTERS}
            fetched_ms = {q: [] for q in TABLE_FILTERS}
            drawn_ms = {q: [] for q in TABLE_FILTERS}
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                context = browser.new_context(viewport={"width": 1600, "height": 1000})
                page = context.new_page()
                page.goto(f"{server.url}/#/runs")
                page.wait_for_selector("#runs-table")
                for _ in range(args.runs):
                    for q in TABLE_FILTERS + [""]:
                        ms = page.evaluate("""(q) => new Promise((resolve) => {
                            const body = document.querySelector('#runs-body'), box = document.querySelector('#runs-filter');
                            let t0;
                            const obs = new MutationObserver(() => {
                                if (body.dataset.q === q) { obs.disconnect();
                                    const drawn = performance.now();
                                    const req = performance.getEntriesByType('resource')
                                        .filter(r => r.name.includes('/api/v1/runs?') && r.startTime >= t0).pop();
                                    requestAnimationFrame(() => resolve([performance.now() - t0,
                                        req ? req.responseEnd - t0 : null, drawn - t0])); } });
                            obs.observe(body, {attributes: true, childList: true});
                            box.value = q; t0 = performance.now();
                            box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));
                        })""", q)
                        if q:
                            browser_ms[q].append(ms[0])
                            fetched_ms[q].append(ms[1])
                            drawn_ms[q].append(ms[2])
                rows = page.eval_on_selector_all("#runs-table tbody tr[data-uid]", "r => r.length")
                context.close()
                browser.close()
        finally:
            server.stop()
    for q in TABLE_FILTERS:
        print(f"runs table, {n:,} runs, filter {q!r}: browser {statistics.median(browser_ms[q]):.0f} ms "
              f"(Enter -> table drawn and painted, median of {args.runs}; answer in at "
              f"{statistics.median(fetched_ms[q]):.0f} ms, DOM built at {statistics.median(drawn_ms[q]):.0f} ms); "
              f"server GET /runs {http[q]:.1f} ms over HTTP, "
              f"{inproc[q]:.1f} ms in the store (SQLite)")
    worst = max(statistics.median(v) for v in browser_ms.values())
    print(f"runs table: slowest filter median {worst:.0f} ms in the browser ({rows} rows shown per page); "
          f"target {TABLE_TARGET_MS:.0f} ms: {'meets' if worst <= TABLE_TARGET_MS else 'MISSES'}")


if __name__ == "__main__":
    sys.exit(main())
