"""Metrics travel as rows (docs/protocol.md, *Rows*): exact on today's server, and on a server older
than the row form, which the exporter finds out from the answer and then sends points to."""

import json
import math
import subprocess
import time

import msgspec
import pytest

from helpers.exporter import ROOT, exporter_env, metric_points, run_python
from helpers.server import LensServer

from primus_lens_wandb_exporter.core.recorder.batch import MetricBatch, Point, Row
from primus_lens_wandb_exporter.sinks.payload import as_points, halves, points_of, row_chunks
from primus_lens_wandb_exporter.sinks.http import HttpSink
from primus_lens_wandb_exporter.sinks.spool import Spool

#: The last commit before the row form: its server ignores ``rows`` (unknown fields are skipped).
OLD_SERVER_COMMIT = "ef4afbc"

# 300 plain rows (the worker's fast path: rows) and, every 50th row, one the slow path takes
# (a NaN and an int: points), so a batch holds both; the last line prints the HTTP sink's counters.
PROGRAM = """
import json, wandb
from primus_lens_wandb_exporter.core.recorder import get_recorder
run = wandb.init(project="rows")
for i in range(300):
    run.log({"loss": 1.0 / (i + 1), "acc": i * 0.001})
    if i % 50 == 0:
        run.log({"eval/loss": float("nan"), "epoch": i // 50})
run.finish()
print(json.dumps(get_recorder().stats()["http"]))
"""


def _expected():
    """``{name: {row: value}}`` of PROGRAM (rows numbered as W&B numbers them)."""
    out = {"loss": {}, "acc": {}, "eval/loss": {}, "epoch": {}}
    row = 0
    for i in range(300):
        out["loss"][row], out["acc"][row] = 1.0 / (i + 1), i * 0.001
        row += 1
        if i % 50 == 0:
            out["eval/loss"][row], out["epoch"][row] = "NaN", float(i // 50)
            row += 1
    return out


def _stored(server, workload):
    got = {}
    for p in metric_points(server, workload):
        value = p["value"]
        got.setdefault(p["metric_name"], {})[p["row"]] = "NaN" if isinstance(value, float) and math.isnan(value) \
            else value
    return got


def _run(server, tmp_path, workload):
    env = exporter_env(server, tmp_path, workload, PRIMUS_LENS_BATCH_SIZE="150")
    proc = run_python(PROGRAM, env)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_the_fast_path_travels_as_rows_and_lens_stores_every_point_exactly(lens_server, tmp_path):
    http, stderr = _run(lens_server, tmp_path, "rows-new")
    assert _stored(lens_server, "rows-new") == _expected()
    assert http["row_form_batches"] >= 4 and http["sent_points"] == 612
    assert "does not read the row form" not in stderr


@pytest.fixture
def old_server(tmp_path):
    """The real Lens server of commit OLD_SERVER_COMMIT (its source from git), on SQLite."""
    src = tmp_path / "old"
    src.mkdir()
    archive = subprocess.run(["git", "-C", ROOT, "archive", OLD_SERVER_COMMIT, "src"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"commit {OLD_SERVER_COMMIT} is not in this checkout (a shallow clone?): "
                    f"{archive.stderr.decode()[:200]}")
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    server = LensServer(f"sqlite://{tmp_path / 'old.db'}", tmp_path / "old-server.log",
                        env={"PYTHONPATH": str(src / "src")})
    server.start()
    yield server
    server.stop()


def test_a_server_older_than_the_row_form_gets_every_point_as_points(old_server, tmp_path):
    # Its answers have no "rows": the first batch is sent again as points, and all after it.
    assert "rows" not in old_server.post("/wandb/metrics", {"workload_uid": "probe", "metrics": []}).json()
    http, stderr = _run(old_server, tmp_path, "rows-old")
    assert _stored(old_server, "rows-old") == _expected()
    assert http["row_form_batches"] == 0 and http["sent_points"] == 612 and http["rejected_points"] == 0
    assert stderr.count("does not read the row form") == 1


def _metrics_posts(server):
    return sum(1 for line in server.log_text().splitlines()
               if '"event": "access"' in line.replace('":"', '": "') and "/wandb/metrics" in line)


def test_spooled_row_bodies_replay_to_an_old_server_as_points(old_server, tmp_path):
    """Row bodies written while Lens was down, replayed once Lens (older) is back: nothing lost, and
    only the first is sent as rows (the others are turned into points before their first POST)."""
    spool = Spool(str(tmp_path / "spool"))
    for part in range(3):
        rows = [{"values": {"a": float(i), "b": -float(i)}, "step": i} for i in range(part * 50, part * 50 + 50)]
        payload = {"workload_uid": "rows-replay", "run_id": "r", "rank": 0, "timestamp": time.time(),
                   "metrics": [], "rows": rows}
        spool.write("/wandb/metrics", payload, 100, msgspec.json.encode(payload))
    before = _metrics_posts(old_server)
    sink = HttpSink(old_server.api, spool=spool)
    sink.flush(time.monotonic() + 30)
    assert sink.counters["replayed_points"] == 300 and not spool.files()
    got = _stored(old_server, "rows-replay")
    assert got == {"a": {i: float(i) for i in range(150)}, "b": {i: -float(i) for i in range(150)}}
    assert _metrics_posts(old_server) - before == 4


# -- the pieces: which batches go as rows, and how a row body is cut -------------------------

def _batch(entries):
    count = sum(len(e.values) if type(e) is Row else len(e) for e in entries)
    return MetricBatch("wandb", "r", 0, 0, 0, 1, entries=entries, count=count)


def test_a_point_sharing_a_row_and_name_with_a_row_keeps_the_batch_in_points():
    # The server stores metrics before rows: the later-logged row value must not be reordered.
    rows = [Row({"a": 1.0}, 5, None, 1.0), Row({"a": 2.0}, 6, None, 1.0)]
    assert _batch(rows).row_form() == (rows, [])
    other = [Point("b", 3.0, 5, None, 1.0)]
    assert _batch(rows + [other]).row_form() == (rows, other)
    assert _batch([rows[0], [Point("a", 3.0, 6, None, 1.0)], rows[1]]).row_form() is None
    assert _batch([[Point("a", 3.0, 6, None, 1.0)]]).row_form() is None
    assert [(p.name, p.value, p.step) for p in _batch(rows + [other]).wire] == \
        [("a", 1.0, 5), ("a", 2.0, 6), ("b", 3.0, 5)]


def test_row_bodies_are_cut_in_order_and_a_long_row_by_its_values():
    rows = [Row({f"k{j}": float(j) for j in range(n)}, i, None, 1.0) for i, n in enumerate((3, 3, 7, 1))]
    points = [Point("p", 1.0, 0, None, 1.0), Point("p", 2.0, 1, None, 1.0)]
    parts = row_chunks(rows, points, 4)
    assert [n for _, _, n in parts] == [2, 3, 3, 4, 4]  # points first; the 7-value row cut 4 + 3
    flat = [(p.name, p.step) for rs, ps, _ in parts for p in ps] + \
           [(k, r.step) for rs, ps, _ in parts for r in rs for k in r.values]
    assert flat == [("p", 0), ("p", 1)] + [(k, r.step) for r in rows for k in r.values]
    payload = {"workload_uid": "w", "metrics": [msgspec.to_builtins(p) for p in points],
               "rows": [msgspec.to_builtins(r) for r in rows]}
    assert points_of(payload) == 16
    assert sum(n for _, n in halves(payload)) == 16 and all(n <= 8 for _, n in halves(payload))
    converted = as_points(payload)
    assert "rows" not in converted and len(converted["metrics"]) == 16
    assert converted["metrics"][2] == {"name": "k0", "value": 0.0, "step": 0, "timestamp": 1.0}
