"""The web UI in headless Chromium against the real Lens server fed through its ingest API.

Charts are drawn by uPlot on a canvas.  What a chart holds is read back from the test hook
on its element (``.plot.__lens``, documented in charts.js: the series handed to uPlot, its
scales, the NaN/Inf markers drawn by the last redraw, and the uPlot instance itself), and
checked against what is on screen where it matters: marker pixels on the canvas, the
hover legend, a real mouse drag to zoom.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time

import pytest

from helpers.ui import LensServer, point, server_available

pytestmark = [pytest.mark.browser]

WORKLOAD = "ui-lightning-workload-0001"
LIVE_WORKLOAD = "ui-live-workload-0002"
STEPS = 120
NONFINITE = {30: float("nan"), 60: float("inf"), 90: float("nan")}   # loss of rank 0


def loss_at(step: int, rank: int) -> float:
    return 2.5 * math.exp(-step / 40) + 0.05 * rank + 0.01 * math.sin(step)


@pytest.fixture(scope="module")
def trained(ui_server):
    """A finished two-rank Lightning run: 3 metrics x 120 steps per rank, NaN/Inf in rank 0's loss."""
    s = ui_server
    s.detection(WORKLOAD, "lightning", "pytorch", "exact", 1.0)
    s.run_event(WORKLOAD, "run-1", "started", project="ui-tests", name="exp-001", mode="offline",
                config={"learning_rate": 0.001, "batch_size": 32, "trainer": {"max_epochs": 3}},
                status="running", tags=["ui"])
    t0 = time.time() - STEPS
    for rank in (0, 1):
        pts = []
        for step in range(STEPS):
            loss = NONFINITE.get(step, loss_at(step, rank)) if rank == 0 else loss_at(step, rank)
            pts += [point("loss", loss, step, t0 + step),
                    point("accuracy", 1 - loss_at(step, rank) / 3, step, t0 + step),
                    point("learning_rate", 1e-3 * 0.98 ** step, step, t0 + step)]
        s.metrics(WORKLOAD, pts, rank=rank, world_size=2)
    s.run_event(WORKLOAD, "run-1", "finished", status="finished", exit_code=0,
                summary={"loss": loss_at(STEPS - 1, 0)})
    return s


def open_metrics(page, server, workload, metric="loss"):
    page.goto(f"{server.url}/#/workloads/{workload}/metrics")
    page.wait_for_selector(f'.plot[data-metric="{metric}"][data-revision]')


def traces(page, metric):
    """[{kind, rank, n, x, y, labels}] of the chart of ``metric``, as handed to uPlot."""
    return page.evaluate(
        """(metric) => {
            const lens = document.querySelector(`.plot[data-metric="${metric}"]`).__lens;
            return lens.series.map(t => ({kind: t.kind, rank: t.rank ?? null, metric: t.metric, n: t.x.length,
                                          x: Array.from(t.x), y: Array.from(t.y, v => v ?? null),
                                          labels: t.labels}));
        }""", metric)


def series_of(metric):
    """JS expression: the series list of the chart of ``metric`` (for wait_for_function)."""
    return f"""document.querySelector('.plot[data-metric="{metric}"]').__lens.series"""


def raw_by_rank(page, metric):
    return {t["rank"]: t for t in traces(page, metric) if t["kind"] == "raw"}


def test_workloads_list_shows_the_workload_with_its_framework(ui_page, trained, screenshot_dir):
    ui_page.goto(trained.url + "/")
    row = ui_page.wait_for_selector(f'#workloads-table tr[data-uid="{WORKLOAD}"]')
    assert row.query_selector(".framework").inner_text() == "lightning / pytorch"
    assert "exact" in row.inner_text()
    assert row.query_selector(".points").inner_text() == f"{3 * STEPS * 2:,}"
    ui_page.screenshot(path=str(screenshot_dir / "workloads.png"))

    # Search narrows the list; a search that matches nothing says so.
    ui_page.fill("#workload-search", "lightning")
    assert ui_page.query_selector(f'tr[data-uid="{WORKLOAD}"]')
    ui_page.fill("#workload-search", "no-such-workload-xyz")
    ui_page.wait_for_selector("text=No workload matches")
    ui_page.fill("#workload-search", "")

    # Sorting by a column marks it and orders the rows.
    ui_page.click('th[data-key="points"]')
    assert ui_page.get_attribute('th[data-key="points"]', "aria-sort") == "descending"
    ui_page.click('th[data-key="points"]')
    assert ui_page.get_attribute('th[data-key="points"]', "aria-sort") == "ascending"


def test_overview_shows_detection_run_config_pods_and_ranks(ui_page, trained, screenshot_dir):
    ui_page.goto(f"{trained.url}/#/workloads/{WORKLOAD}")
    ui_page.wait_for_selector("#det-wrapper")
    assert ui_page.inner_text("#det-wrapper") == "lightning"
    assert ui_page.inner_text("#det-base") == "pytorch"
    assert "exact" in ui_page.inner_text("#det-method")
    runs = ui_page.inner_text("#runs-table")
    assert "ui-tests" in runs and "exp-001" in runs
    # the config as a tree (its raw JSON folded under it)
    assert ui_page.inner_text('details.run-config li.tree-leaf[data-key="learning_rate"]') == "learning_rate: 0.001"
    assert ui_page.inner_text("#ov-ranks").split() == ["0", "1"]
    assert "train-pod-0" in ui_page.inner_text("#ov-pods")
    ui_page.screenshot(path=str(screenshot_dir / "overview.png"), full_page=True)


def test_metrics_tab_draws_every_logged_point_per_rank_and_marks_nan(ui_page, trained, screenshot_dir):
    open_metrics(ui_page, trained, WORKLOAD)
    for metric in ("accuracy", "learning_rate"):
        ui_page.wait_for_selector(f'.plot[data-metric="{metric}"][data-revision]')
    assert ui_page.inner_text("#source-select option:checked").startswith("WandB")

    raw = raw_by_rank(ui_page, "loss")
    assert sorted(raw) == [0, 1]
    for rank in (0, 1):
        assert raw[rank]["n"] == STEPS
        assert raw[rank]["x"] == list(range(STEPS))
    # Finite values are drawn as logged; non-finite ones leave a gap in the line ...
    assert raw[1]["y"][7] == pytest.approx(loss_at(7, 1))
    assert [raw[0]["y"][s] for s in NONFINITE] == [None, None, None]
    # ... and are drawn as markers of their own, labelled with what they were.
    marks = [t for t in traces(ui_page, "loss") if t["kind"] == "nonfinite"]
    assert len(marks) == 1 and marks[0]["rank"] == 0 and marks[0]["x"] == sorted(NONFINITE)
    assert marks[0]["labels"] == ["NaN", "Infinity", "NaN"]
    assert ui_page.inner_text('.chart-card[data-metric="loss"] .nonfinite-badge') == "3 NaN/Inf"
    # Drawn on the canvas: each marker's centre pixel is the marker red (#d62728).
    drawn = ui_page.evaluate("""() => {
        const lens = document.querySelector('.plot[data-metric="loss"]').__lens;
        const u = lens.chart, r = devicePixelRatio;
        return lens.markers.map(m => {
            const px = u.ctx.getImageData(Math.round(u.bbox.left + m.left * r), Math.round(u.bbox.top + m.top * r), 1, 1).data;
            return {step: m.step, label: m.label, rgb: [px[0], px[1], px[2]], left: m.left, top: m.top};
        });
    }""")
    assert [(m["step"], m["label"]) for m in drawn] == [(30, "NaN"), (60, "Infinity"), (90, "NaN")]
    for m in drawn:
        assert m["rgb"] == [0xd6, 0x27, 0x28], m
    # Hovering a marker names it in the chart's legend.
    over = ui_page.query_selector('.plot[data-metric="loss"] .u-over').bounding_box()
    ui_page.mouse.move(over["x"] + drawn[1]["left"], over["y"] + drawn[1]["top"])
    ui_page.wait_for_function(
        """() => [...document.querySelectorAll('.plot[data-metric="loss"] .u-legend .u-value')]
                 .some(e => e.textContent === 'Infinity at step 60')""")
    legend = ui_page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        '.plot[data-metric="loss"] .u-legend .u-series')].map(r => [r.querySelector('.u-label').textContent,
                                                                    r.querySelector('.u-value').textContent]))""")
    assert legend["step"] == "60" and legend["rank 0"] == "Infinity"     # the cut line says why
    assert float(legend["rank 1"]) == pytest.approx(loss_at(60, 1), rel=1e-5)
    assert not [t for t in traces(ui_page, "accuracy") if t["kind"] == "nonfinite"]
    ui_page.screenshot(path=str(screenshot_dir / "metrics.png"), full_page=True)


def test_rank_selector_hides_and_restores_a_rank(ui_page, trained):
    open_metrics(ui_page, trained, WORKLOAD)
    ui_page.uncheck('#rank-picker input[data-rank="1"]')
    ui_page.wait_for_function(f"() => {series_of('loss')}.every(t => t.rank !== 1)")
    assert sorted(raw_by_rank(ui_page, "loss")) == [0]
    assert sorted(raw_by_rank(ui_page, "accuracy")) == [0]
    ui_page.check('#rank-picker input[data-rank="1"]')
    ui_page.wait_for_function(f"() => {series_of('loss')}.some(t => t.rank === 1)")
    assert sorted(raw_by_rank(ui_page, "loss")) == [0, 1]


def test_smoothing_log_scale_time_axis_and_overlay(ui_page, trained):
    open_metrics(ui_page, trained, WORKLOAD)
    ui_page.fill("#smoothing", "0.9")   # a range input: fill sets the value and fires input
    ui_page.wait_for_function(f"() => {series_of('accuracy')}.some(t => t.kind === 'smoothed')")
    smoothed = [t for t in traces(ui_page, "accuracy") if t["kind"] == "smoothed" and t["rank"] == 1][0]
    # W&B's debiased EMA, computed here independently of the page.
    last, expected = 0.0, []
    for i in range(STEPS):
        last = 0.9 * last + 0.1 * (1 - loss_at(i, 1) / 3)
        expected.append(last / (1 - 0.9 ** (i + 1)))
    assert smoothed["y"] == pytest.approx(expected, rel=1e-9)

    ui_page.check("#logy")
    ui_page.wait_for_function("""() => { const u = document.querySelector('.plot[data-metric="loss"]').__lens.chart;
                                           return u.scales.y.distr === 3; }""")   # uPlot's log scale
    ui_page.select_option("#xaxis-select", "time")
    ui_page.wait_for_function("""() => { const u = document.querySelector('.plot[data-metric="loss"]').__lens.chart;
                                           return u.scales.x.time === true; }""")
    times = [t for t in traces(ui_page, "loss") if t["kind"] == "raw" and t["rank"] == 1][0]["x"]
    assert times[0] > 1e12 and times == sorted(times)       # epoch ms
    ui_page.select_option("#layout-select", "overlay")
    ui_page.wait_for_function("() => document.querySelectorAll('.chart-card').length === 1")
    ui_page.wait_for_selector(".chart-card .plot[data-revision]")
    overlay = ui_page.evaluate(
        "() => document.querySelector('.chart-card .plot').__lens.series.filter(t => t.kind === 'raw').map(t => t.metric)")
    assert sorted(set(overlay)) == ["accuracy", "learning_rate", "loss"]
    # Preferences persist in localStorage: put them back for the other tests of this context.
    ui_page.evaluate("() => localStorage.clear()")


def test_csv_download_has_every_point_at_full_resolution(ui_page, trained):
    open_metrics(ui_page, trained, WORKLOAD)
    with ui_page.expect_download() as info:
        ui_page.click('.chart-card[data-metric="loss"] button.csv')
    rows = list(csv.DictReader(io.StringIO(open(info.value.path(), encoding="utf-8").read())))
    assert len(rows) == 2 * STEPS
    assert {r["metric"] for r in rows} == {"loss"}
    assert [r["value"] for r in rows if r["rank"] == "0" and int(r["step"]) in NONFINITE] == ["NaN", "Infinity", "NaN"]


def test_live_refresh_appends_new_points_without_resending_old_ones(ui_page, ui_server):
    s = ui_server
    s.detection(LIVE_WORKLOAD, None, "pytorch", "heuristic", 0.6)
    s.run_event(LIVE_WORKLOAD, "live-run", "started", project="ui-tests", name="live", status="running")
    now = time.time()
    s.metrics(LIVE_WORKLOAD, [point("loss", 1.0 / (i + 1), i, now - 20 + i * 0.5) for i in range(20)],
              run_id="live-run")

    polled = []

    def on_response(response):
        if "/metrics/data" in response.url and "after_row=" in response.url:
            polled.append(response.json()["data"])

    ui_page.on("response", on_response)
    open_metrics(ui_page, s, LIVE_WORKLOAD)
    assert raw_by_rank(ui_page, "loss")[0]["n"] == 20
    # The live state comes with the workload's detail, a request of its own after the first chart.
    ui_page.wait_for_selector('#live-bar[data-live="on"]')

    for batch in range(3):           # training goes on while the page is open
        time.sleep(0.4)
        s.metrics(LIVE_WORKLOAD, [point("loss", 1.0 / (i + 1), i, time.time()) for i in range(20 + 10 * batch, 30 + 10 * batch)],
                  run_id="live-run")
    ui_page.wait_for_function(
        f"""() => {{ const t = {series_of('loss')}.find(t => t.kind === 'raw');
                    return t && t.x.length === 50; }}""", timeout=15_000)
    assert raw_by_rank(ui_page, "loss")[0]["x"] == list(range(50))
    # Every poll asked only for rows after the last one held: each new point came exactly once.
    # (The last poll's body may still be on its way to the handler: given a moment.)
    end = time.monotonic() + 10
    while (resent := sorted(p["iteration"] for batch in polled for p in batch)) != list(range(20, 50)) \
            and time.monotonic() < end:
        ui_page.wait_for_timeout(100)
    assert resent == list(range(20, 50))


def test_empty_and_not_found_states_say_what_to_do(ui_page, ui_server):
    ui_page.goto(f"{ui_server.url}/#/workloads/no-such-workload-42")
    missing = ui_page.wait_for_selector("#workload-missing")
    assert "WORKLOAD_UID" in missing.inner_text() and "primus-lens doctor" in missing.inner_text()

    # A workload known from its detection only: no points yet.
    ui_server.detection("ui-empty-workload-0003", "lightning", "pytorch")
    ui_page.goto(f"{ui_server.url}/#/workloads/ui-empty-workload-0003/metrics")
    empty = ui_page.wait_for_selector("#metrics-empty")
    assert "No data yet" in empty.inner_text() and "primus-lens doctor" in empty.inner_text()


def test_token_is_asked_once_and_kept_for_the_session(chromium, tmp_path, screenshot_dir):
    reason = server_available()
    if reason:
        pytest.skip(reason)
    server = LensServer.start(tmp_path / "auth", token="s3cret-token")
    try:
        context = chromium.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", "wrong-token")
        page.click("#token-submit")
        page.wait_for_selector("#token-dialog[open]")
        assert "rejected" in page.inner_text("#token-reason")
        page.fill("#token-input", "s3cret-token")
        page.click("#token-submit")
        # No workload yet on this server: the empty state explains how to get one.
        empty = page.wait_for_selector("#workloads-empty")
        assert "primus-lens doctor" in empty.inner_text()
        page.screenshot(path=str(screenshot_dir / "empty.png"))
        assert page.evaluate("() => sessionStorage.getItem('primus-lens-token')") == "s3cret-token"
        requests_with_token = []
        page.on("request", lambda r: requests_with_token.append(r.headers.get("authorization"))
                if "/api/v1/" in r.url else None)
        page.reload()
        page.wait_for_selector("#workloads-empty")
        assert not page.is_visible("#token-dialog")
        assert requests_with_token and set(requests_with_token) == {"Bearer s3cret-token"}
        context.close()
    finally:
        server.stop()


def test_big_series_is_downsampled_and_zooming_in_fetches_the_detail(ui_page, ui_server):
    workload, n = "ui-big-workload-0005", 6000
    t0 = int(time.time()) - n
    ui_server.metrics(workload, [point("loss", math.sin(i / 7) + (5.0 if i == 4321 else 0.0), i, t0 + i)
                                 for i in range(n)], run_id="big")
    open_metrics(ui_page, ui_server, workload)
    drawn = raw_by_rank(ui_page, "loss")[0]
    assert drawn["n"] < n / 2                       # downsampled on the server ...
    assert 4321 in drawn["x"]                       # ... keeping the spike
    assert "downsampled" in ui_page.inner_text('.chart-card[data-metric="loss"] .chart-info')

    # Drag-select steps 3000..3100 with the mouse, as a user zooms.
    edges = ui_page.evaluate("""() => { const u = document.querySelector('.plot[data-metric="loss"]').__lens.chart;
                                        return [u.valToPos(3000, 'x'), u.valToPos(3100, 'x')]; }""")
    over = ui_page.query_selector('.plot[data-metric="loss"] .u-over').bounding_box()
    y = over["y"] + over["height"] / 2
    ui_page.mouse.move(over["x"] + edges[0], y)
    ui_page.mouse.down()
    ui_page.mouse.move(over["x"] + (edges[0] + edges[1]) / 2, y)
    ui_page.mouse.move(over["x"] + edges[1], y)
    ui_page.mouse.up()
    zoom = ui_page.evaluate("""() => { const x = document.querySelector('.plot[data-metric="loss"]').__lens.chart.scales.x;
                                       return [x.min, x.max]; }""")
    step_px = 6000 / over["width"]
    assert zoom[0] == pytest.approx(3000, abs=2 * step_px) and zoom[1] == pytest.approx(3100, abs=2 * step_px)
    lo, hi = math.ceil(zoom[0]), math.floor(zoom[1])
    # The window is fetched again at full detail: every step in it is drawn ...
    ui_page.wait_for_function(
        f"""() => {{ const x = {series_of('loss')}.find(t => t.kind === 'raw').x;
                    return x.filter(s => s >= {lo} && s <= {hi}).length === {hi - lo + 1}; }}""")
    # ... and the zoom survives that redraw.
    after = ui_page.evaluate("""() => { const x = document.querySelector('.plot[data-metric="loss"]').__lens.chart.scales.x;
                                        return [x.min, x.max]; }""")
    assert after == zoom


def test_metrics_are_grouped_in_sections_by_prefix_like_wandb(ui_page, ui_server):
    workload = "ui-sections-workload-0006"
    now = int(time.time())
    ui_server.metrics(workload, [point(name, 1.0 + i, i, now - 10 + i)
                                 for name in ("train/loss", "eval/loss", "train/lr", "epoch") for i in range(5)])
    open_metrics(ui_page, ui_server, workload, metric="train/loss")
    ui_page.wait_for_selector('.plot[data-metric="epoch"][data-revision]')
    order = ui_page.eval_on_selector_all(
        "#charts > *", "els => els.map(e => e.dataset.section !== undefined ? '#' + e.dataset.section : e.dataset.metric)")
    assert order == ["#eval", "eval/loss", "#train", "train/loss", "train/lr", "#other", "epoch"]
    assert raw_by_rank(ui_page, "train/lr")[0]["n"] == 5


def test_a_metric_whose_name_holds_a_comma_is_charted(ui_page, ui_server):
    """The UI asks for its metrics by exact name (a JSON array): "top1,top5" was split in two
    by the comma list, and its chart stayed empty."""
    workload = "ui-comma-workload-0007"
    now = int(time.time())
    ui_server.metrics(workload, [point(name, 1.0 + i, i, now - 10 + i) for name in ("top1,top5", "loss") for i in range(5)])
    open_metrics(ui_page, ui_server, workload, metric="top1,top5")
    assert raw_by_rank(ui_page, "top1,top5")[0]["n"] == 5
    # A shared link that selects it alone (the view's URL holds the names as a JSON array when a
    # comma list would split one) opens that one chart, and the URL keeps it.
    from urllib.parse import quote

    link = quote(json.dumps(["top1,top5"]))
    ui_page.goto(f"{ui_server.url}/#/workloads/{workload}/metrics?metrics={link}")
    ui_page.wait_for_selector('.plot[data-metric="top1,top5"][data-revision]')
    assert ui_page.eval_on_selector_all(".plot[data-metric]", "els => els.map(e => e.dataset.metric)") == ["top1,top5"]
    kept = ui_page.evaluate("() => new URLSearchParams(location.hash.split('?')[1]).get('metrics')")
    assert json.loads(kept) == ["top1,top5"]


def test_a_missing_charting_library_is_an_error_state_that_says_what_to_run(ui_page, trained):
    # As on a server whose checkout never ran `npm ci`: uPlot's script answers 404.
    ui_page.route("**/static/vendor/uPlot.iife.min.js*",
                  lambda route: route.fulfill(status=404, body="uPlot is not installed"))
    ui_page.goto(f"{trained.url}/#/workloads/{WORKLOAD}/metrics")
    alert = ui_page.wait_for_selector("#charts-missing")
    assert "npm ci" in alert.inner_text() and "README" in alert.inner_text()
    card = ui_page.wait_for_selector('.chart-card[data-metric="loss"] .charts-missing')
    assert "npm ci" in card.inner_text()
    assert not ui_page.query_selector(".plot[data-revision]")


def test_overview_shows_evidence_without_url_credentials_and_no_csp_violations(ui_page, ui_server):
    # Issue 11, items 4 and 5: a client that did not redact (an old exporter, a hand-written one)
    # reports URLs with passwords; the Overview shows the values without them. The page runs
    # under the server's Content-Security-Policy: nothing it needs is blocked.
    workload = "ui-secrets-workload-0001"
    violations = []
    ui_page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    ui_server.post("/wandb/detection", {
        "workload_uid": workload, "pod_name": "train-pod-0",
        "evidence": {"environment": {"PRIMUS_LENS_API_BASE_URL": "http://lens:hunter2@lens.example:8080/api/v1",
                                     "PRIMUS_DB": "postgresql://app:hunter2@db:5432/lens"}},
        "detection": {"wrapper": None, "base": "pytorch", "method": "heuristic", "confidence": 0.5}})
    ui_server.post("/wandb/metrics", {"workload_uid": workload, "rank": 0,
                                      "metrics": [{"name": "loss", "value": 1.0 / (i + 1), "step": i}
                                                  for i in range(5)]})
    ui_page.goto(f"{ui_server.url}/#/workloads/{workload}")
    ui_page.wait_for_selector("#det-base")
    ui_page.click("details.evidence summary")
    shown = ui_page.inner_text("details.evidence pre")
    assert "http://***@lens.example:8080/api/v1" in shown and "postgresql://***@db:5432/lens" in shown
    assert "hunter2" not in ui_page.content()
    ui_page.goto(f"{ui_server.url}/#/workloads/{workload}/metrics")
    ui_page.wait_for_selector('.chart-card[data-metric="loss"] .plot[data-revision]')
    assert violations == []
