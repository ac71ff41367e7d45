"""series.js (the Metrics tab's data handling) run by Node, without a browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest

from lens import SRC

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
            values: s0.values.map(String), min: store.minLastStep(['loss']), none: store.minLastStep(['acc']),
            ranks: store.ranks(), nonfinite: s0.nonFiniteCount()}));
    """)
    assert out == {"first": ["loss"], "again": [], "steps": [1, 2, 3], "values": ["1", "2", "NaN"],
                   "min": 1, "none": None, "ranks": [0, 1], "nonfinite": 1}


def test_csv_has_one_quoted_line_per_point():
    out = run_node("""
        console.log(JSON.stringify(S.rowsToCsv([
            {metric_name: 'eval/loss,top1', rank: 0, run_id: 'r', iteration: 5, timestamp: 0, value: 'NaN'},
            {metric_name: 'loss', rank: 1, run_id: 'r', iteration: 6, timestamp: 1732680000000, value: 0.25}])));
    """)
    assert out.splitlines() == [
        "metric,rank,run_id,step,timestamp_ms,time_utc,value",
        '"eval/loss,top1",0,r,5,0,1970-01-01T00:00:00.000Z,NaN',
        "loss,1,r,6,1732680000000,2024-11-27T04:00:00.000Z,0.25",
    ]
