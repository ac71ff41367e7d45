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

    python benchmarks/bench_ui_first_paint.py [--metrics 10] [--points 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    reason = server_available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    from primus_lens_wandb_exporter.server.ui import MISSING_MESSAGE, vendor_dir

    if vendor_dir() is None:
        print(f"cannot run: {MISSING_MESSAGE}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

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
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")
    print(f"charts: uPlot from {vendor_dir()}")
    print(f"first meaningful paint, {args.metrics} charts x {args.points:,} points (median of {args.runs}): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items())
          + f"; target {TARGET_S} s: " + ", ".join(f"{k} {'meets' if v <= TARGET_S else 'MISSES'}"
                                                   for k, v in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
