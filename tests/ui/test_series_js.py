"""series.js (the Metrics tab's data handling) run by Node, without a browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest

from helpers.ui import ROOT, SRC

SERIES_JS = SRC / "primus_lens_wandb_exporter" / "server" / "ui" / "static" / "js" / "series.js"
NODE = shutil.which("node")


def run_node(body: str):
    if not NODE:
        pytest.skip("node is not installed")
    script = f"import * as S from {json.dumps(SERIES_JS.as_uri())};\n" + textwrap.dedent(body)
    proc = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_wire_values_parse_to_numbers_including_non_finite():
    out = run_node("""
        console.log(JSON.stringify(["NaN", "Infinity", "-Infinity", 1.5, "2"].map(v => String(S.parseValue(v)))));
    """)
    assert out == ["NaN", "Infinity", "-Infinity", "1.5", "2"]


def test_ema_is_debiased_like_wandb_and_skips_non_finite_points():
    ys = [1.0, 2.0, float("nan"), 4.0, 3.0]
    out = run_node("""
        const ys = [1, 2, NaN, 4, 3];
        console.log(JSON.stringify({w0: S.emaDebiased(ys, 0), w6: S.emaDebiased(ys, 0.6)}));
    """)
    assert out["w0"] == [1, 2, None, 4, 3]
    last, n, expected = 0.0, 0, []
    for y in ys:
        if y != y:
            expected.append(None)
            continue
        n += 1
        last = 0.6 * last + 0.4 * y
        expected.append(last / (1 - 0.6 ** n))
    assert out["w6"][0] == pytest.approx(1.0)          # the first point is not pulled towards 0
    assert out["w6"] == pytest.approx(expected)


def test_store_upserts_by_step_keeps_order_and_finds_where_to_resume():
    out = run_node("""
        const store = new S.SeriesStore();
        const row = (m, r, it, v) => ({metric_name: m, rank: r, run_id: 'a', iteration: it, timestamp: 1000 + it, value: v});
        const first = store.merge([row('loss', 0, 1, 1), row('loss', 0, 3, 3), row('loss', 1, 1, 5)]);
        const again = store.merge([row('loss', 0, 3, 3)]);                 // a resent point changes nothing
        store.merge([row('loss', 0, 2, 2), row('loss', 0, 3, 'NaN')]);     // late point, and an upsert
        const s0 = store.forMetric('loss')[0];
        console.log(JSON.stringify({first: [...first], again: [...again], steps: s0.steps,
            values: s0.values.map(String), min: store.minLastRow(['loss']), none: store.minLastRow(['acc']),
            ranks: store.ranks(), nonfinite: s0.nonFiniteCount()}));
    """)
    assert out == {"first": ["loss"], "again": [], "steps": [1, 2, 3], "values": ["1", "2", "NaN"],
                   "min": 1, "none": None, "ranks": [0, 1], "nonfinite": 1}


def test_store_keys_points_by_row_and_orders_them_by_step():
    # Rows 117 and 118 both logged at epoch 3, a fractional step, a row re-sent with
    # another step (it moves), and the last row a live refresh resumes after.
    out = run_node("""
        const store = new S.SeriesStore();
        const row = (r, it, v) => ({metric_name: 'eval/loss', rank: 0, run_id: 'a', iteration: it, row: r,
                                    timestamp: 1000 + r, value: v});
        store.merge([row(117, 3, 0.5), row(118, 3, 0.4), row(119, 2.5, 0.3), row(120, 4, 0.2)]);
        const again = store.merge([row(118, 3, 0.4)]);
        store.merge([row(117, 4.5, 0.6)]);
        const s = store.forMetric('eval/loss')[0];
        console.log(JSON.stringify({steps: s.steps, rows: s.rows, values: s.values, again: [...again],
                                    resume: store.minLastRow(['eval/loss'])}));
    """)
    assert out == {"steps": [2.5, 3, 4, 4.5], "rows": [119, 118, 120, 117], "values": [0.3, 0.4, 0.2, 0.6],
                   "again": [], "resume": 120}


def test_csv_has_one_quoted_line_per_point():
    out = run_node("""
        console.log(JSON.stringify(S.rowsToCsv([
            {metric_name: 'eval/loss,top1', rank: 0, run_id: 'r', iteration: 5, timestamp: 0, value: 'NaN'},
            {metric_name: 'loss', rank: 1, run_id: 'r', iteration: 6.5, row: 9, timestamp: 1732680000000,
             value: 0.25}])));
    """)
    assert out.splitlines() == [
        "metric,rank,run_id,step,row,timestamp_ms,time_utc,value",
        '"eval/loss,top1",0,r,5,5,0,1970-01-01T00:00:00.000Z,NaN',
        "loss,1,r,6.5,9,1732680000000,2024-11-27T04:00:00.000Z,0.25",
    ]


CHARTS_JS = SERIES_JS.parent / "charts.js"
UPLOT_ESM = ROOT / "node_modules" / "uplot" / "dist" / "uPlot.esm.js"


def build_chart(body: str):
    """Run ``body`` with charts.js (C), series.js (S) and the real uPlot from npm as window.uPlot."""
    if not UPLOT_ESM.is_file():
        pytest.fail("uPlot is not installed: run `npm ci` in the repository root (make install does)")
    return run_node(f"""
        import uPlot from {json.dumps(UPLOT_ESM.as_uri())};
        globalThis.window = {{uPlot}};
        const C = await import({json.dumps(CHARTS_JS.as_uri())});
    """ + textwrap.dedent(body))


def test_chart_marks_every_non_finite_point_where_the_line_is_cut():
    out = build_chart("""
        const store = new S.SeriesStore();
        const row = (r, it, v) => ({metric_name: 'loss', rank: r, run_id: 'a', iteration: it, timestamp: 1000 + it, value: v});
        store.merge([row(0, 0, 'NaN'), row(0, 1, 2), row(0, 2, 'Infinity'), row(0, 3, 1), row(0, 4, '-Infinity'),
                     row(1, 1, 5), row(1, 3, 6)]);
        const fig = C.buildChart(store.forMetric('loss'), {xAxis: 'step', smoothing: 0, logY: false,
                                                           colorIndex: s => s.rank});
        console.log(JSON.stringify({series: fig.series.map(s => ({kind: s.kind, rank: s.rank, x: s.x, y: s.y,
                                                                  labels: s.labels || null})),
                                    data: fig.data.map(a => Array.from(a, v => v === undefined ? 'gap-filler' : v))}));
    """)
    raw0, raw1, marks = out["series"]
    assert (raw0["kind"], raw1["kind"], marks["kind"]) == ("raw", "raw", "nonfinite")   # markers listed last
    assert raw0["y"] == [None, 2, None, 1, None]          # the line is cut at each non-finite point
    assert marks["x"] == [0, 2, 4] and marks["labels"] == ["NaN", "Infinity", "-Infinity"]
    # Each marker sits at the last finite value before it (the first one: at the first finite value).
    assert marks["y"] == [2, 2, 1]
    # One aligned table for uPlot: rank 1 logged steps 1 and 3 only; its other steps are
    # alignment fillers (the line goes on), not gaps.
    assert out["data"][0] == [0, 1, 2, 3, 4]
    assert out["data"][2] == ["gap-filler", 5, "gap-filler", 6, "gap-filler"]
    assert out["data"][3] == [2, "gap-filler", 2, "gap-filler", 1]


def test_chart_smooths_and_log_scale_drops_non_positive_values():
    out = build_chart("""
        const store = new S.SeriesStore();
        store.merge([0, 1, 2, 3].map(i => ({metric_name: 'm', rank: 0, iteration: i, timestamp: 5000 + i,
                                             value: [1, 0, 4, -2][i]})));
        const fig = C.buildChart(store.forMetric('m'), {xAxis: 'time', smoothing: 0.5, logY: true, colorIndex: () => 0});
        console.log(JSON.stringify(fig.series.map(s => ({kind: s.kind, x: s.x, y: Array.from(s.y, v => v ?? null)}))));
    """)
    raw, smoothed = out
    assert raw["x"] == [5000, 5001, 5002, 5003]             # time axis: epoch ms
    assert raw["y"] == [1, None, 4, None]                   # log scale: <= 0 is a gap
    assert smoothed["kind"] == "smoothed"
    last, expected = 0.0, []
    for i, v in enumerate([1, 0, 4, -2]):                   # smoothed in linear space, then drawn
        last = 0.5 * last + 0.5 * v
        expected.append(last / (1 - 0.5 ** (i + 1)))
    assert expected[3] > 0 and smoothed["y"] == pytest.approx(expected)
