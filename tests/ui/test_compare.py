"""Compare view, shareable URL, dark mode and legend fixes, in headless Chromium.

The data is a small sweep logged by real ``wandb`` (offline) scripts activated by the installed
exporter, exactly as users run them (nothing in the script mentions Lens): workload A with
lr 0.001 on two ranks, workload B with lr 0.003 on one rank.  What a chart holds is read from
its test hook (``.plot.__lens``, charts.js), the legend from uPlot's DOM.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = [pytest.mark.browser]

STEPS = 40
SWEEP = {"ui-compare-lr0001": (0.001, (0, 1)), "ui-compare-lr0003": (0.003, (0,))}
RUN_NAME = {"ui-compare-lr0001": "lr-0.001", "ui-compare-lr0003": "lr-0.003"}

TRAIN = textwrap.dedent(f"""
    import math, os, sys
    import wandb
    lr, name, rank = float(sys.argv[1]), sys.argv[2], int(os.environ["RANK"])
    run = wandb.init(project="ui-sweep", name=name, config={{"lr": lr, "batch_size": 32}})
    for step in range({STEPS}):
        wandb.log({{"loss": 2.5 * math.exp(-lr * 25 * step) + 0.1 * rank, "acc": lr * step}}, step=step)
    wandb.finish()
""")


def loss_at(lr, step, rank=0):
    return 2.5 * math.exp(-lr * 25 * step) + 0.1 * rank


@pytest.fixture(scope="module")
def sweep(ui_server, tmp_path_factory):
    from helpers.exporter import exporter_env  # the environment of a training pod

    procs = []
    for uid, (lr, ranks) in SWEEP.items():
        for rank in ranks:
            tmp = tmp_path_factory.mktemp(f"{uid}-{rank}")
            env = exporter_env(ui_server, tmp, uid, pod_name=f"{uid}-pod-{rank}", RANK=rank, LOCAL_RANK=rank,
                               WORLD_SIZE=len(ranks))
            procs.append(subprocess.Popen([sys.executable, "-c", TRAIN, str(lr), RUN_NAME[uid]], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out = p.communicate(timeout=300)[0]
        assert p.returncode == 0, out[-4000:]
    # Every point of every rank is stored (the exporter flushes at wandb.finish()).
    deadline = time.monotonic() + 60
    for uid, (_, ranks) in SWEEP.items():
        while True:
            got = ui_server.get(f"/workloads/{uid}/metrics/available", data_source="wandb")["metrics"]
            counts = {m["name"]: m["count"] for m in got}
            if counts.get("loss") == STEPS * len(ranks) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert counts.get("loss") == STEPS * len(ranks), counts
    return ui_server


def lens_series(page, metric):
    return page.evaluate(
        """(metric) => document.querySelector(`.plot[data-metric="${metric}"]`).__lens.series.map(t => ({
              kind: t.kind, workload: t.workload, rank: t.rank, label: t.label,
              x: Array.from(t.x), y: Array.from(t.y, v => v ?? null)}))""", metric)


def legend_labels(page, metric):
    """The labels of the legend rows a user sees (uPlot's legend, hidden rows left out)."""
    return page.evaluate(
        """(metric) => [...document.querySelectorAll(`.plot[data-metric="${metric}"] .u-legend .u-series`)]
              .filter(r => r.offsetParent !== null).map(r => r.querySelector('.u-label').textContent)""", metric)


def open_compare_from_list(page, server):
    page.goto(server.url + "/")
    for uid in SWEEP:
        page.check(f'#workloads-table tr[data-uid="{uid}"] input.pick-box')
    assert page.inner_text("#compare-button") == "Compare 2"
    page.click("#compare-button")
    page.wait_for_selector('.plot[data-metric="loss"][data-revision]')


def test_compare_overlays_two_workloads_coloured_and_named_by_run(ui_page, sweep, screenshot_dir):
    open_compare_from_list(ui_page, sweep)
    ui_page.wait_for_selector('.plot[data-metric="acc"][data-revision]')
    ui_page.screenshot(path=str(screenshot_dir / "compare.png"), full_page=True)
    raw = [t for t in lens_series(ui_page, "loss") if t["kind"] == "raw"]
    got = sorted((t["workload"], t["rank"]) for t in raw)
    assert got == [("ui-compare-lr0001", 0), ("ui-compare-lr0001", 1), ("ui-compare-lr0003", 0)]
    for t in raw:
        lr = SWEEP[t["workload"]][0]
        assert t["x"] == list(range(STEPS))
        assert t["y"] == pytest.approx([loss_at(lr, s, t["rank"]) for s in range(STEPS)], rel=1e-6)
        assert t["label"] == f"{RUN_NAME[t['workload']]} · rank {t['rank']}"
    # One colour per workload: both ranks (W&B runs) of A share it, B has another (uPlot's own series strokes).
    strokes = ui_page.evaluate("""() => { const l = document.querySelector('.plot[data-metric="loss"]').__lens;
        return l.series.map((t, i) => [t.workload, t.rank, l.chart.series[i + 1]._stroke]); }""")
    colour = {(w, r): c for w, r, c in strokes}
    assert colour[("ui-compare-lr0001", 0)] == colour[("ui-compare-lr0001", 1)] != colour[("ui-compare-lr0003", 0)]
    assert sorted(legend_labels(ui_page, "loss")) == ["lr-0.001 · rank 0", "lr-0.001 · rank 1", "lr-0.003 · rank 0", "step"]

    # Ranks: hiding rank 1 removes A's rank 1 from every chart.
    ui_page.uncheck('#rank-picker input[data-rank="1"]')
    ui_page.wait_for_function("""() => document.querySelector('.plot[data-metric="acc"]').__lens.series
                                   .every(t => t.rank !== 1)""")
    assert sorted((t["workload"], t["rank"]) for t in lens_series(ui_page, "loss") if t["kind"] == "raw") == [
        ("ui-compare-lr0001", 0), ("ui-compare-lr0003", 0)]
    # Smoothing: a smoothed line per run, the raw one under it.
    ui_page.fill("#smoothing", "0.8")
    ui_page.wait_for_function("""() => document.querySelector('.plot[data-metric="loss"]').__lens.series
                                   .some(t => t.kind === 'smoothed')""")
    smoothed = [t for t in lens_series(ui_page, "loss") if t["kind"] == "smoothed"]
    assert sorted(t["workload"] for t in smoothed) == sorted(SWEEP)
    b = [t for t in smoothed if t["workload"] == "ui-compare-lr0003"][0]
    last, expected = 0.0, []
    for i in range(STEPS):
        last = 0.8 * last + 0.2 * loss_at(0.003, i)
        expected.append(last / (1 - 0.8 ** (i + 1)))
    assert b["y"] == pytest.approx(expected, rel=1e-9)


def test_the_url_follows_the_view_and_a_copied_url_opens_the_same_view(ui_page, sweep, chromium):
    open_compare_from_list(ui_page, sweep)
    ui_page.uncheck('#metric-picker input[data-metric="acc"]')
    ui_page.wait_for_function("() => !document.querySelector('.plot[data-metric=\"acc\"]')")
    ui_page.uncheck('#rank-picker input[data-rank="1"]')
    ui_page.fill("#smoothing", "0.6")
    ui_page.select_option("#xaxis-select", "time")
    ui_page.check("#logy")
    ui_page.wait_for_function("""() => { const l = document.querySelector('.plot[data-metric="loss"]').__lens;
                                         return l.xAxis === 'time' && l.logY && l.series.some(t => t.kind === 'smoothed'); }""")
    url = ui_page.url
    assert "#/compare?" in url
    before = lens_series(ui_page, "loss")

    # A new browser (no localStorage, no history) opening the copied URL sees the same view.
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    try:
        other = context.new_page()
        other.goto(url)
        other.wait_for_selector('.plot[data-metric="loss"][data-revision]')
        other.wait_for_function("""() => { const l = document.querySelector('.plot[data-metric="loss"]').__lens;
                                           return l.series.some(t => t.kind === 'smoothed'); }""")
        assert lens_series(other, "loss") == before
        lens = other.evaluate("""() => { const l = document.querySelector('.plot[data-metric="loss"]').__lens;
                                         return {xAxis: l.xAxis, logY: l.logY}; }""")
        assert lens == {"xAxis": "time", "logY": True}
        assert other.query_selector('.plot[data-metric="acc"]') is None
        assert not other.is_checked('#metric-picker input[data-metric="acc"]')
        assert other.is_checked('#metric-picker input[data-metric="loss"]')
        assert not other.is_checked('#rank-picker input[data-rank="1"]')
        assert other.input_value("#smoothing") == "0.6"
        assert other.input_value("#xaxis-select") == "time"
        assert other.is_checked("#logy")
    finally:
        context.close()


def test_dark_mode_follows_the_system_and_the_toggle_is_kept(chromium, sweep, screenshot_dir):
    def background(page):
        return page.evaluate("() => getComputedStyle(document.body).backgroundColor")

    context = chromium.new_context(color_scheme="dark", viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        page.goto(f"{sweep.url}/#/compare?w={','.join(SWEEP)}")
        page.wait_for_selector('.plot[data-metric="loss"][data-revision]')
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        assert background(page) == "rgb(15, 17, 21)"
        # The chart's axes are drawn in the theme's text colour (light on dark).
        axis = page.evaluate("""() => document.querySelector('.plot[data-metric="loss"]').__lens.chart.axes[0]
                                  .stroke(null, 0)""")
        assert axis == "#e5e7eb"
        page.wait_for_selector('.plot[data-metric="acc"][data-revision]')
        page.screenshot(path=str(screenshot_dir / "compare-dark.png"), full_page=True)
        page.click("#theme-toggle")
        assert page.evaluate("() => document.documentElement.dataset.theme") == "light"
        assert background(page) == "rgb(246, 247, 249)"
        page.reload()
        page.wait_for_selector('.plot[data-metric="loss"][data-revision]')
        assert page.evaluate("() => document.documentElement.dataset.theme") == "light"   # kept
    finally:
        context.close()
    context = chromium.new_context(color_scheme="light")
    try:
        page = context.new_page()
        page.goto(sweep.url + "/")
        page.wait_for_selector("#workloads-table")
        assert page.evaluate("() => document.documentElement.dataset.theme") == "light"
        assert background(page) == "rgb(246, 247, 249)"
    finally:
        context.close()


def test_a_smoothed_chart_lists_each_line_once_in_its_legend(ui_page, sweep):
    ui_page.goto(f"{sweep.url}/#/workloads/ui-compare-lr0001/metrics?metrics=loss")
    ui_page.wait_for_selector('.plot[data-metric="loss"][data-revision]')
    ui_page.fill("#smoothing", "0.5")
    ui_page.wait_for_function("""() => document.querySelector('.plot[data-metric="loss"]').__lens.series
                                   .some(t => t.kind === 'smoothed')""")
    labels = legend_labels(ui_page, "loss")
    # one entry per line (each rank is a W&B run of its own: "rank 0 · <run id>"), no "(raw)" twin
    assert [label.split(" · ")[0] for label in labels] == ["step", "rank 0", "rank 1"], labels
    # Hiding the smoothed line from the legend hides its raw line too.
    ui_page.locator('.plot[data-metric="loss"] .u-legend .u-series:not(.legend-hidden) .u-label',
                    has_text="rank 0").click()
    shown = ui_page.evaluate("""() => { const l = document.querySelector('.plot[data-metric="loss"]').__lens;
        return l.series.map((t, i) => [t.kind, t.rank, l.chart.series[i + 1].show]); }""")
    assert [s for s in shown if s[1] == 0] == [["raw", 0, False], ["smoothed", 0, False]]
    assert [s for s in shown if s[1] == 1] == [["raw", 1, True], ["smoothed", 1, True]]
    ui_page.evaluate("() => localStorage.clear()")


def test_many_ranks_do_not_grow_a_tall_legend(ui_page, ui_server):
    from helpers.ui import point

    uid = "ui-compare-many-ranks"
    t0 = time.time() - 10
    for rank in range(32):
        ui_server.metrics(uid, [point("loss", 1.0 + rank, s, t0 + s) for s in range(5)], rank=rank, world_size=32)
    ui_page.goto(f"{ui_server.url}/#/workloads/{uid}/metrics")
    ui_page.wait_for_selector('.plot[data-metric="loss"][data-revision]')
    box = ui_page.evaluate("""() => { const g = document.querySelector('.plot[data-metric="loss"] .u-legend');
        return {height: g.getBoundingClientRect().height, scroll: g.scrollHeight}; }""")
    assert box["height"] <= 100 and box["scroll"] > box["height"], box    # capped, scrolls


def test_a_plain_wandb_workload_gets_a_neutral_label(ui_page, sweep):
    detail = sweep.get("/workloads/ui-compare-lr0003")
    det = detail.get("detection") or {}
    assert not det.get("wrapper") and not det.get("base") and det.get("method"), det   # only wandb was seen
    ui_page.goto(sweep.url + "/")
    row = ui_page.wait_for_selector('#workloads-table tr[data-uid="ui-compare-lr0003"]')
    badge = row.query_selector(".badge.wandb-only")
    assert badge and badge.inner_text() == "W&B only"
    assert not row.query_selector(".badge.heuristic")
    ui_page.goto(f"{sweep.url}/#/workloads/ui-compare-lr0003")
    ui_page.wait_for_selector("#workload-framework .badge")
    text = ui_page.inner_text("#workload-framework")
    assert "unknown framework" not in text and "heuristic" not in text


def test_the_metrics_tab_url_follows_the_view_too(ui_page, sweep, chromium):
    uid = "ui-compare-lr0001"
    ui_page.goto(f"{sweep.url}/#/workloads/{uid}/metrics")
    ui_page.wait_for_selector('.plot[data-metric="acc"][data-revision]')
    ui_page.uncheck('#metric-picker input[data-metric="acc"]')
    ui_page.uncheck('#rank-picker input[data-rank="0"]')
    ui_page.fill("#smoothing", "0.7")
    ui_page.select_option("#xaxis-select", "time")
    ui_page.wait_for_function("""() => { const l = document.querySelector('.plot[data-metric="loss"]').__lens;
        return l.xAxis === 'time' && l.series.some(t => t.kind === 'smoothed') && l.series.every(t => t.rank === 1); }""")
    url = ui_page.url
    before = lens_series(ui_page, "loss")
    ui_page.evaluate("() => localStorage.clear()")     # the new page must get it all from the URL

    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    try:
        other = context.new_page()
        other.goto(url)
        other.wait_for_function("""() => { const el = document.querySelector('.plot[data-metric="loss"]');
            return el && el.__lens && el.__lens.series.some(t => t.kind === 'smoothed'); }""")
        assert lens_series(other, "loss") == before
        assert other.evaluate("() => document.querySelector('.plot[data-metric=\"loss\"]').__lens.xAxis") == "time"
        assert other.query_selector('.plot[data-metric="acc"]') is None
        assert not other.is_checked('#rank-picker input[data-rank="0"]')
        assert other.input_value("#smoothing") == "0.7"
    finally:
        context.close()


def test_compare_shows_the_config_diff_of_the_compared_runs(ui_page, sweep):
    ui_page.goto(f"{sweep.url}/#/compare?w=ui-compare-lr0001,ui-compare-lr0003")
    ui_page.wait_for_selector("#config-diff-table")

    def table():
        return ui_page.evaluate("""() => [...document.querySelectorAll('#config-diff-table tbody tr')].map(
            r => [...r.querySelectorAll('td')].map(td => td.textContent.trim()))""")

    # Only the keys that differ by default: lr (as logged by wandb.init(config=...)).
    assert table() == [["lr", "0.001", "0.003"]]
    ui_page.uncheck("#diff-only")
    assert table() == [["batch_size", "32", "32"], ["lr", "0.001", "0.003"]]
    assert ui_page.evaluate("""() => [...document.querySelectorAll('#config-diff-table tbody tr')]
                                      .map(r => r.classList.contains('differs'))""") == [False, True]
    assert ui_page.evaluate("() => document.querySelector('#config-diff').open")   # ticking did not fold it


def test_zooming_a_compare_chart_fetches_each_downsampled_workload_in_detail(ui_page, ui_server):
    from helpers.ui import point

    n, t0 = 6000, int(time.time()) - 6000
    big = ("ui-compare-big-a", "ui-compare-big-b")
    for k, uid in enumerate(big):
        ui_server.metrics(uid, [point("loss", math.sin(i / 7) + k, i, t0 + i) for i in range(n)], run_id=f"big-{k}")
    ui_page.goto(f"{ui_server.url}/#/compare?w={','.join(big)}")
    ui_page.wait_for_selector('.plot[data-metric="loss"][data-revision]')
    raw = [t for t in lens_series(ui_page, "loss") if t["kind"] == "raw"]
    assert len(raw) == 2 and all(len(t["x"]) < n / 2 for t in raw)        # downsampled on the server
    # Drag-select steps 3000..3100 with the mouse.
    edges = ui_page.evaluate("""() => { const u = document.querySelector('.plot[data-metric="loss"]').__lens.chart;
                                        return [u.valToPos(3000, 'x'), u.valToPos(3100, 'x')]; }""")
    over = ui_page.query_selector('.plot[data-metric="loss"] .u-over').bounding_box()
    y = over["y"] + over["height"] / 2
    ui_page.mouse.move(over["x"] + edges[0], y)
    ui_page.mouse.down()
    ui_page.mouse.move(over["x"] + edges[1], y)
    ui_page.mouse.up()
    zoom = ui_page.evaluate("""() => { const x = document.querySelector('.plot[data-metric="loss"]').__lens.chart.scales.x;
                                       return [Math.ceil(x.min), Math.floor(x.max)]; }""")
    lo, hi = zoom
    assert hi - lo > 50
    # Both workloads' windows come at full detail: every step in the window, for each.
    ui_page.wait_for_function(
        f"""() => document.querySelector('.plot[data-metric="loss"]').__lens.series.filter(t => t.kind === 'raw')
                 .every(t => Array.from(t.x).filter(s => s >= {lo} && s <= {hi}).length === {hi - lo + 1})""")


def test_the_compare_metric_filter_narrows_the_checklist_not_the_charts(ui_page, sweep):
    ui_page.goto(f"{sweep.url}/#/compare?w=ui-compare-lr0001,ui-compare-lr0003")
    ui_page.wait_for_selector('.plot[data-metric="acc"][data-revision]')
    ui_page.fill("#metric-filter", "los")
    assert ui_page.eval_on_selector_all("#metric-picker input", "els => els.map(e => e.dataset.metric)") == ["loss"]
    assert ui_page.query_selector('.plot[data-metric="acc"]')       # still drawn
    ui_page.fill("#metric-filter", "")
    assert ui_page.eval_on_selector_all("#metric-picker input", "els => els.map(e => e.dataset.metric)") == ["acc", "loss"]


def test_the_exporters_system_metrics_get_their_own_section(ui_page, ui_server):
    from helpers.ui import point

    uid, now = "ui-system-metrics", int(time.time())
    names = ("train/loss", "epoch", "_primus_sys_cpu_percent", "_primus_gpu_0_util", "_primus_gpu_0_mem_used_mb")
    ui_server.metrics(uid, [point(name, 1.0 + i, i, now - 10 + i) for name in names for i in range(5)])
    ui_page.goto(f"{ui_server.url}/#/workloads/{uid}/metrics")
    ui_page.wait_for_selector('.plot[data-metric="_primus_sys_cpu_percent"][data-revision]')
    order = ui_page.eval_on_selector_all(
        "#charts > *", "els => els.map(e => e.dataset.section !== undefined ? '#' + e.dataset.section : e.dataset.metric)")
    assert order == ["#train", "train/loss", "#other", "epoch", "#system (CPU, memory, GPU)",
                     "_primus_gpu_0_mem_used_mb", "_primus_gpu_0_util", "_primus_sys_cpu_percent"]


def test_compare_shows_each_workloads_wandb_summary(ui_page, ui_server):
    # (The offline wandb runs of the sweep report no summary to Lens: the run events here go
    # through the ingest API, as the exporter sends them at wandb.finish().)
    from helpers.ui import point

    now = time.time()
    for uid, loss in (("ui-compare-sum-a", 0.5), ("ui-compare-sum-b", 0.25)):
        ui_server.run_event(uid, f"run-{uid}", "started", project="ui-sweep", name=uid[-5:], config={"lr": loss})
        ui_server.metrics(uid, [point("loss", loss, 0, now)], run_id=f"run-{uid}")
        ui_server.run_event(uid, f"run-{uid}", "finished", status="finished", exit_code=0,
                            summary={"loss": loss, "eval": {"acc": 1 - loss}})
    ui_page.goto(f"{ui_server.url}/#/compare?w=ui-compare-sum-a,ui-compare-sum-b")
    ui_page.wait_for_selector("#summary-table-grid")
    rows = ui_page.evaluate("""() => [...document.querySelectorAll('#summary-table-grid tbody tr')].map(
        r => [...r.querySelectorAll('td')].map(td => td.textContent.trim()))""")
    assert rows == [["eval.acc", "0.5", "0.75"], ["loss", "0.5", "0.25"]]


def test_compare_refreshes_live_workloads_with_only_the_new_rows(ui_page, ui_server):
    """Two workloads whose runs are still going: points logged after Compare opened appear in
    its charts (asked for with after_row, so no old point comes again), the zoom kept; the
    live bar goes once the runs finish."""
    from helpers.ui import point

    uids = ["ui-compare-live-a", "ui-compare-live-b"]
    t0 = time.time()
    for k, uid in enumerate(uids):
        ui_server.run_event(uid, f"{uid}-run", "started", name=f"live-{k}", project="ui-live")
        ui_server.metrics(uid, [point("loss", 1.0 + k + s / 10, s, t0 + s / 100) for s in range(10)], run_id=f"{uid}-run")
    ui_page.goto(f"{ui_server.url}/#/compare?w={','.join(uids)}&metrics=loss")
    ui_page.wait_for_selector('.plot[data-metric="loss"][data-revision]')
    ui_page.wait_for_selector('#compare-live[data-live="on"]')
    assert "2 of 2 workloads live" in ui_page.inner_text("#compare-live")
    # New rows for A only: A's line grows to step 14, B's stays at 10 points.
    ui_server.metrics(uids[0], [point("loss", 3.0 + s, s, time.time()) for s in range(10, 15)], run_id=f"{uids[0]}-run")
    ui_page.wait_for_function("""() => document.querySelector('.plot[data-metric="loss"]').__lens.series
                                   .some(t => t.workload === 'ui-compare-live-a' && t.x.length === 15)""")
    got = {t["workload"]: (t["x"], t["y"]) for t in lens_series(ui_page, "loss") if t["kind"] == "raw"}
    assert got[uids[0]][0] == list(range(15)) and got[uids[0]][1][10:] == [3.0 + s for s in range(10, 15)]
    assert got[uids[1]][0] == list(range(10))
    polls = ui_page.evaluate("""() => performance.getEntriesByType('resource').map(r => r.name)
                                   .filter(n => n.includes('ui-compare-live-a/metrics/data'))""")
    assert polls and all("after_row=" in p for p in polls)   # never the whole series again
    assert any("after_row=9" in p for p in polls)
    # The runs finish: after the grace ticks the bar goes and the polling stops.
    for uid in uids:
        ui_server.run_event(uid, f"{uid}-run", "finished", status="finished")
    ui_page.wait_for_selector("#compare-live", state="hidden", timeout=30_000)
