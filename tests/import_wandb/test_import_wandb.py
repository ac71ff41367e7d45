"""``primus-lens import-wandb``: W&B runs on disk reach Lens as the live exporter sends them.

Real wandb (offline) writes the run files, the real ``primus-lens`` command imports them
into a real Lens server, and the points are compared with what the live exporter stored
for the same run.
"""

import glob
import json
import os
import shutil
import sys

import pytest

from helpers.server import LENS_DB_KINDS
from helpers.exporter import exporter_env, get_json, metric_points, run_cli, run_python, wandb_run_dir, workload

# define_metric with a custom step metric (fractional values, step_sync filled by W&B), a NaN,
# nested dicts, an explicit step, a summary-only key, media and text (filtered alike).
PARITY = """
import math, wandb
run = wandb.init(project="imp", name="parity", config={"lr": 0.1, "zero_optimization": {"stage": 2}},
                 tags=["a", "b"])
run.define_metric("eval/step")
run.define_metric("eval/*", step_metric="eval/step", step_sync=True)
for i in range(6):
    run.log({"train/loss": 1.0 / (i + 1), "opt": {"lr": 0.01 * i, "beta": {"b1": 0.9}}, "note": "x"})
    if i == 2:
        run.log({"train/loss": float("nan"), "inf": math.inf})
    if i % 2:
        run.log({"eval/step": i + 0.5, "eval/acc": 0.1 * i})
    if i == 3:
        run.log({"eval/other": 7.0})        # no eval/step here: W&B fills in 3.5 (step_sync)
run.log({"late": 1.0}, step=20)
run.summary["final_metric"] = 42.0      # summary-only key: a point of the last row
run.summary["train/loss"] = 0.01        # summary of a history key: no new point
wandb.finish()
"""

# Two runs in one wandb/ directory; torch imported (W&B's telemetry records it).
TWO_RUNS = """
import torch, wandb
for name in ("first", "second"):
    run = wandb.init(project="imp2", name=name, config={"which": name}, reinit="create_new")
    for i in range(5):
        run.log({"loss": 1.0 / (i + 1), "grp": {"x": i}})
    run.finish()
"""


def _key(point):
    value = point["value"]
    value = round(value, 12) if isinstance(value, float) else value
    return (point["metric_name"], point["row"], point["iteration"], value)


def _points(server, uid):
    """(name, row, step, value) of every point of a workload, in history order."""
    return sorted(_key(p) for p in metric_points(server, uid, x="row"))


def _env(server, tmp_path, **extra):
    # The importing process: the exporter's API settings; no workload of its own (the
    # default workload uid comes from each run unless --workload-uid says otherwise).
    env = exporter_env(server, tmp_path, "importer", **extra)
    env.pop("WORKLOAD_UID")
    env.pop("POD_NAME")
    return env


def _quiet_wandb_env(tmp_path):
    return exporter_env(None, tmp_path, "unused", PRIMUS_LENS_WANDB_HOOK="false")


def test_imported_run_equals_what_the_live_exporter_stored(lens_server, tmp_path):
    run_python(PARITY, exporter_env(lens_server, tmp_path, "live-A"))
    run_dir = wandb_run_dir(tmp_path)
    proc = run_cli(["import-wandb", run_dir, "--workload-uid", "import-B"], _env(lens_server, tmp_path))
    assert "Traceback" not in proc.stderr
    live, imported = _points(lens_server, "live-A"), _points(lens_server, "import-B")
    assert imported == live
    names = {p[0] for p in imported}
    assert {"train/loss", "opt.lr", "opt.beta.b1", "eval/step", "eval/acc", "eval/other", "inf", "late",
            "final_metric"} <= names
    assert not names & {"note", "_step", "_runtime", "_timestamp"}
    by_name = {}
    for name, row, step, value in imported:
        by_name.setdefault(name, []).append((row, step, value))
    # The custom step metric's values, fractional; eval/other got W&B's step_sync value.
    assert [s for _, s, _ in sorted(by_name["eval/acc"])] == [1.5, 3.5, 5.5]
    assert [s for _, s, _ in by_name["eval/other"]] == [3.5]
    assert "NaN" in [v for _, _, v in by_name["train/loss"]]
    assert by_name["final_metric"][0][2] == 42.0
    assert by_name["final_metric"][0][0] == 20 and by_name["late"][0][0] == 20


def test_import_of_the_capture_scenario_equals_live_capture(lens_server, tmp_path):
    # Every call shape of the live-capture tests (explicit steps, commit=False, numpy and
    # torch scalars, nested dicts, non-finite values, text, lists, a summary-only key).
    from helpers.scenarios import SCENARIO

    run_python(SCENARIO, exporter_env(lens_server, tmp_path, "scenario-live"))
    run_cli(["import-wandb", wandb_run_dir(tmp_path), "--workload-uid", "scenario-import"],
            _env(lens_server, tmp_path))
    live = _points(lens_server, "scenario-live")
    assert len(live) == 26
    assert _points(lens_server, "scenario-import") == live


def test_imported_run_is_what_wandbs_own_record_holds(lens_server, tmp_path):
    # The oracle reads the same file independently of the product (tests/helpers/wandb_oracle.py):
    # rows, W&B-filled step metrics, wandb-core's glob binding.
    from helpers.wandb_oracle import assert_same_points, lens_points, summary_only_values, wandb_expected_points

    run_python(PARITY, _quiet_wandb_env(tmp_path))
    run_dir = wandb_run_dir(tmp_path)
    run_cli(["import-wandb", run_dir, "--workload-uid", "oracle"], _env(lens_server, tmp_path))
    assert_same_points(wandb_expected_points(run_dir), lens_points(lens_server, "oracle"), "import",
                       summary_only=summary_only_values(run_dir))


def test_run_record_and_detection_say_it_was_imported(lens_server, tmp_path):
    run_python(PARITY, _quiet_wandb_env(tmp_path))
    run_cli(["import-wandb", wandb_run_dir(tmp_path), "--workload-uid", "imported", "--rank", "3"],
            _env(lens_server, tmp_path))
    body = workload(lens_server, "imported")
    (run,) = body["runs"]
    assert (run["project"], run["name"], run["status"], run["tags"]) == ("imp", "parity", "finished", ["a", "b"])
    assert run["config"]["lr"] == 0.1 and run["config"]["zero_optimization"] == {"stage": 2}
    assert "_wandb" not in run["config"]
    assert run["summary"]["final_metric"] == 42.0 and run["summary"]["train/loss"] == 0.01
    det = body["detection"]
    assert det["base"] == "deepspeed" and det["method"] == "heuristic"  # from the config key
    assert det["evidence"]["import"]["tool"] == "primus-lens import-wandb"
    assert "import:wandb-file" in det["hints"]["primary_indicators"]
    points = metric_points(lens_server, "imported")
    assert {p["rank"] for p in points} == {3}
    # The run's own times, not the import's: it started before its first row and ended after its last.
    first, last = min(p["timestamp"] for p in points), max(p["timestamp"] for p in points)
    assert run["started_at"] <= first <= last <= run["finished_at"] < (first + 600_000)


@pytest.mark.parametrize("lens_db_kind", LENS_DB_KINDS, indirect=True)
def test_import_twice_changes_nothing(lens_server, tmp_path):
    run_python(PARITY, _quiet_wandb_env(tmp_path))
    env = _env(lens_server, tmp_path)
    first = json.loads(run_cli(["import-wandb", wandb_run_dir(tmp_path), "--json"], env).stdout)
    (run,) = first["runs"]
    uid = run["workload_uid"]
    assert uid == f"wandb-imp-{run['run_id']}"  # the documented default
    stored = _points(lens_server, uid)
    count = get_json(lens_server, f"/api/v1/workloads/{uid}/metrics/data", data_source="wandb")["total_count"]
    assert len(stored) == run["points"] == run["accepted"] == count and run["rejected"] == 0
    again = json.loads(run_cli(["import-wandb", wandb_run_dir(tmp_path), "--json"], env).stdout)
    assert again["totals"] == first["totals"]
    assert _points(lens_server, uid) == stored
    assert get_json(lens_server, f"/api/v1/workloads/{uid}/metrics/data", data_source="wandb")["total_count"] == count
    assert len(workload(lens_server, uid)["runs"]) == 1


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A ``wandb/`` directory holding two offline runs (written once for the module)."""
    root = tmp_path_factory.mktemp("two-runs")
    run_python(TWO_RUNS, _quiet_wandb_env(root))
    dirs = sorted(glob.glob(os.path.join(root, "wandb", "offline-run-*")))
    assert len(dirs) == 2
    return root


def test_a_wandb_directory_imports_every_run(lens_server, tmp_path, two_runs):
    proc = run_cli(["import-wandb", str(two_runs / "wandb"), "--workload-uid", "both"], _env(lens_server, tmp_path))
    runs = workload(lens_server, "both")["runs"]
    assert sorted(r["name"] for r in runs) == ["first", "second"]
    points = metric_points(lens_server, "both")
    assert len(points) == 2 * 5 * 2
    assert {p["run_id"] for p in points} == {r["run_id"] for r in runs}
    assert "2 runs (0 with problems), 10 rows, 20 points sent, 20 accepted, 0 rejected" in proc.stdout
    det = workload(lens_server, "both")["detection"]
    assert det["base"] == "pytorch" and det["method"] == "heuristic"
    assert "wandb_telemetry:torch" in det["evidence"]["base_frameworks"]["pytorch"]["indicators"]


def test_dry_run_sends_nothing(lens_server, tmp_path, two_runs):
    out = json.loads(run_cli(["import-wandb", str(two_runs), "--dry-run", "--json"],
                             _env(lens_server, tmp_path)).stdout)
    assert out["totals"]["points"] == 20 and out["totals"]["sent"] == 0 and out["dry_run"]
    assert get_json(lens_server, "/api/v1/workloads")["workloads"] == []


def test_a_corrupt_file_is_one_clear_line_and_the_other_runs_are_imported(lens_server, tmp_path, two_runs):
    wandb_dir = tmp_path / "copy"
    shutil.copytree(two_runs / "wandb", wandb_dir, symlinks=True)
    first = sorted(glob.glob(str(wandb_dir / "offline-run-*" / "run-*.wandb")))[0]
    data = bytearray(open(first, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: its record's checksum no longer matches
    open(first, "wb").write(bytes(data))
    proc = run_cli(["import-wandb", str(wandb_dir), "--workload-uid", "half"], _env(lens_server, tmp_path),
                   check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("import-wandb:")]
    assert len(errors) == 1 and "corrupt record at byte" in errors[0] and first in errors[0]
    # The good run is there in full.  Which run is corrupt depends on the directory names'
    # order (a time stamp to the second, then the random run id): name it by its file.
    corrupt_id = os.path.basename(first)[len("run-"):-len(".wandb")]
    (good,) = [r for r in workload(lens_server, "half")["runs"] if r["run_id"] != corrupt_id]
    points = [p for p in metric_points(lens_server, "half") if p["run_id"] == good["run_id"]]
    assert len(points) == 10


def test_a_point_lens_cannot_take_is_counted_and_the_rest_stored(lens_server, tmp_path):
    # A step metric value beyond what Lens stores (|step| <= limits.MAX_ABS_STEP): that one
    # point is filtered by the sink or refused by the server; either way it is counted.
    code = """
import wandb
run = wandb.init(project="imp", name="huge-step")
run.define_metric("val/*", step_metric="epoch")
run.log({"epoch": 1.0, "val/x": 1.0})
run.log({"epoch": 1e300, "val/x": 2.0})
run.log({"epoch": 3.0, "val/x": 3.0})
run.finish()
"""
    run_python(code, _quiet_wandb_env(tmp_path))
    proc = run_cli(["import-wandb", wandb_run_dir(tmp_path), "--workload-uid", "huge", "--json"],
                   _env(lens_server, tmp_path), check=False)
    (run,) = json.loads(proc.stdout)["runs"]
    assert run["points"] == 6 and run["rejected"] + run["filtered"] == 1 and run["accepted"] == 5
    assert proc.returncode == (1 if run["rejected"] else 0)
    stored = _points(lens_server, "huge")
    assert [(n, r, s) for n, r, s, _ in stored if n == "val/x"] == [("val/x", 0, 1), ("val/x", 2, 3)]


def test_bad_paths_and_non_wandb_files_are_one_line_each(lens_server, tmp_path):
    env = _env(lens_server, tmp_path)
    for path, expected in ((tmp_path / "missing", "no such file or directory"),
                           (tmp_path, "no W&B run here")):
        proc = run_cli(["import-wandb", str(path)], env, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    junk = tmp_path / "run-x.wandb"
    junk.write_bytes(b"not a wandb file at all")
    proc = run_cli(["import-wandb", str(junk)], env, check=False)
    assert proc.returncode == 1 and "not a W&B run file" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_still_being_written_imports_its_complete_rows(lens_server, tmp_path, two_runs):
    first = sorted(glob.glob(str(two_runs / "wandb" / "offline-run-*" / "run-*.wandb")))[0]
    cut = tmp_path / "run-cut.wandb"
    data = open(first, "rb").read()
    cut.write_bytes(data[:len(data) - 20])  # the end of the last record is missing
    out = json.loads(run_cli(["import-wandb", str(cut), "--workload-uid", "cut", "--json"],
                             _env(lens_server, tmp_path)).stdout)
    (run,) = out["runs"]
    assert run["ok"] and run["rows"] == 5 and run["accepted"] == 10
    assert "the file ends inside a record" in run["notes"][0]


def test_without_lens_it_says_so_and_exits_1(tmp_path, two_runs):
    env = _env(None, tmp_path, PRIMUS_LENS_MAX_RETRIES="1")
    proc = run_cli(["import-wandb", str(two_runs)], env, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "unreachable" in proc.stderr and "run the import again" in proc.stderr


def test_without_wandb_a_clear_message(monkeypatch, capsys, tmp_path):
    from primus_lens_wandb_exporter import cli

    monkeypatch.setitem(sys.modules, "wandb.proto", None)  # as if wandb were not installed
    monkeypatch.setitem(sys.modules, "wandb.proto.wandb_internal_pb2", None)
    assert cli.main(["import-wandb", str(tmp_path)]) == 2
    assert "pip install wandb" in capsys.readouterr().err


def test_reader_yields_what_wandb_recorded(tmp_path, two_runs):
    from primus_lens_wandb_exporter.import_wandb import read_records

    first = sorted(glob.glob(str(two_runs / "wandb" / "offline-run-*" / "run-*.wandb")))[0]
    kinds = [r.WhichOneof("record_type") for r in read_records(first)]
    assert kinds.count("history") == 5 and kinds.count("run") == 1 and kinds.count("exit") == 1
