"""DeepSpeed ZeRO on CPU (gloo) for real: DeepSpeed's monitor events reach Lens once each.

Every test runs ``examples/deepspeed_zero.py`` (real DeepSpeed 0.19, real wandb
offline) in fresh interpreters activated by the installed start-up line, and reads
back the real Lens server.  DeepSpeed's own ``csv_monitor`` is the reference: it
writes every event DeepSpeed produced, so Lens must hold exactly those values at
exactly those sample counts.
"""

import csv
import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from helpers.server import free_port
from helpers.e2e import (assert_each_point_emitted_once, by_name, jsonl_rows, mirrored_points,  # noqa: F401
                         module_server, new_workload, points_of, sources)
from helpers.exporter import ROOT, exporter_env, run_python, wait_for, wandb_run_dir, workload
from helpers.wandb_oracle import assert_same_points, jsonl_points, wandb_expected_points

# Checked without importing DeepSpeed into the test process.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")

EXAMPLE = os.path.join(ROOT, "examples", "deepspeed_zero.py")
STEPS = 6
MICRO_BATCH = 4
LR = "Train/Samples/lr"


def _env(server, tmp_path, uid, **extra):
    env = exporter_env(server, tmp_path, uid, PRIMUS_LENS_WANDB_OUTPUT_PATH=tmp_path / "jsonl",
                       TORCH_EXTENSIONS_DIR=os.path.expanduser("~/.cache/torch_extensions"),
                       OMP_NUM_THREADS="1", **extra)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _args(tmp_path, report_to, stage, *extra):
    return ("--report-to", report_to, "--stage", str(stage), "--steps", str(STEPS),
            "--micro-batch", str(MICRO_BATCH), "--csv-dir", str(tmp_path / "csv"), *extra)


def _csv_events(tmp_path, label):
    """{samples: value} that DeepSpeed's csv_monitor wrote for ``label``."""
    name = label.replace("/", "_") + ".csv"
    paths = glob.glob(str(tmp_path / "csv" / "*" / name))
    assert len(paths) == 1, paths
    with open(paths[0], newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return {int(step): float(value) for step, value in rows}


def _assert_equal_series(actual, expected, what):
    assert sorted(actual) == sorted(expected), f"{what}: steps {sorted(actual)} != {sorted(expected)}"
    for step, value in expected.items():
        assert actual[step] == pytest.approx(value, rel=1e-6, abs=1e-12), f"{what} at samples={step}"


def _deepspeed_detection(server, uid, stage):
    det = wait_for(lambda: (workload(server, uid) or {}).get("detection"), timeout=30)
    assert (det["wrapper"], det["base"], det["method"]) == (None, "deepspeed", "exact"), det
    evidence = det["evidence"]["base_frameworks"]["deepspeed"]
    assert evidence["method"] == "exact" and evidence["zero_stage"] == stage, evidence
    assert evidence["version"].startswith("0.")
    return det


def test_deepspeed_zero2_with_wandb_monitor_reports_each_event_once_at_samples(module_server, tmp_path):
    uid = new_workload("ds-wandb")
    # csv_monitor alongside wandb: DeepSpeed's own record of what it emitted.
    run_python(EXAMPLE, _env(module_server, tmp_path, uid), args=_args(tmp_path, "both", 2), timeout=300)
    expected = _csv_events(tmp_path, LR)
    assert sorted(expected) == [MICRO_BATCH * (i + 1) for i in range(STEPS)]  # x axis: samples

    points = points_of(module_server, uid, "wandb", STEPS)
    assert {p["rank"] for p in points} == {0}
    _assert_equal_series(by_name(points)[LR], expected, LR)
    # The W&B stream carried them; our DeepSpeed monitor stayed silent: no second copy.
    assert sources(module_server, uid) == {"wandb": STEPS}
    rows = jsonl_rows(tmp_path / "jsonl")
    assert_each_point_emitted_once(rows)
    assert {(r["source"], r["name"]) for r in rows} == {("wandb", LR)} and len(rows) == STEPS

    det = _deepspeed_detection(module_server, uid, stage=2)
    # DeepSpeed's ranks form a torch process group while a W&B run is open, so the plain-PyTorch
    # adapter claimed pytorch exactly as well; the specific base still wins.
    assert wait_for(lambda: workload(module_server, uid)["detection"]["evidence"]["base_frameworks"]
                    .get("pytorch", {}).get("method") == "exact"), det["evidence"]["base_frameworks"]
    assert workload(module_server, uid)["detection"]["base"] == "deepspeed"
    runs = workload(module_server, uid)["runs"]
    assert len(runs) == 1 and runs[0]["project"] == "lens-deepspeed-example", runs  # WandbMonitor's wandb.init


def test_deepspeed_wandb_monitor_and_user_wandb_log_history_is_mirrored_exactly(module_server, tmp_path):
    """Issue 10's oracle: every point of W&B's own history (the run's .wandb file) is in Lens and in
    the JSONL sink once, at W&B's row, step and value. DeepSpeed's wandb monitor logs with an
    explicit step (samples, so W&B's rows are 4, 8 ...); the user's own ``wandb.log`` of the loss
    after each step (no step) lands in the monitor's open row and is charted by the user's
    ``define_metric("loss", step_metric="global_step")``: 1, 2 ..."""
    uid = new_workload("ds-oracle")
    run_python(EXAMPLE, _env(module_server, tmp_path, uid), args=_args(tmp_path, "wandb", 2, "--log-loss"),
               timeout=300)
    expected = wandb_expected_points(wandb_run_dir(tmp_path))
    assert {name for name, _row in expected} == {LR, "loss", "global_step"}
    assert len(expected) == 3 * STEPS
    assert sorted((row, step) for (name, row), (step, _) in expected.items() if name == "loss") == \
        [(MICRO_BATCH * i, i) for i in range(1, STEPS + 1)]
    assert_same_points(expected, mirrored_points(module_server, uid, expected), "Lens vs W&B history")
    assert_same_points(expected, jsonl_points(tmp_path / "jsonl"), "JSONL sink vs W&B history")
    assert sources(module_server, uid) == {"wandb": 3 * STEPS}, "our DeepSpeed monitor must not add a copy"


def test_deepspeed_zero1_with_csv_monitor_only_reports_through_lens_monitor(module_server, tmp_path):
    uid = new_workload("ds-csv")
    run_python(EXAMPLE, _env(module_server, tmp_path, uid), args=_args(tmp_path, "csv", 1), timeout=300)
    expected = _csv_events(tmp_path, LR)

    points = points_of(module_server, uid, "deepspeed", STEPS)
    assert {p["rank"] for p in points} == {0}
    assert {p["data_source"] for p in points} == {"deepspeed"}
    _assert_equal_series(by_name(points)[LR], expected, LR)
    assert sources(module_server, uid) == {"deepspeed": STEPS}
    assert_each_point_emitted_once(jsonl_rows(tmp_path / "jsonl"))

    _deepspeed_detection(module_server, uid, stage=1)
    assert workload(module_server, uid)["runs"] == []  # no W&B run anywhere


def test_deepspeed_wandb_monitor_with_wandb_integration_disabled_reports_through_lens_monitor(module_server,
                                                                                             tmp_path):
    uid = new_workload("ds-nowandb")
    env = _env(module_server, tmp_path, uid, PRIMUS_LENS_DISABLED_INTEGRATIONS="wandb")
    run_python(EXAMPLE, env, args=_args(tmp_path, "both", 2), timeout=300)

    # W&B received the events but nothing mirrors W&B now: our monitor must report them.
    points = points_of(module_server, uid, "deepspeed", STEPS)
    _assert_equal_series(by_name(points)[LR], _csv_events(tmp_path, LR), LR)
    assert sources(module_server, uid) == {"deepspeed": STEPS}
    assert_each_point_emitted_once(jsonl_rows(tmp_path / "jsonl"))
    _deepspeed_detection(module_server, uid, stage=2)


@pytest.mark.slow
def test_deepspeed_two_ranks_every_rank_claims_only_rank0_reports_events(module_server, tmp_path):
    uid = new_workload("ds-2ranks")
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "--log-dir", str(logs), "--redirects", "3", EXAMPLE, *_args(tmp_path, "csv", 2)]
    env = _env(module_server, tmp_path, uid, PRIMUS_LENS_WANDB_DEBUG="true")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"

    # Each rank built a DeepSpeed engine, so each one knows the base framework exactly.
    for rank in (0, 1):
        (stderr,) = glob.glob(str(logs / "*" / "attempt_0" / str(rank) / "stderr.log"))
        with open(stderr, errors="replace") as fh:
            text = fh.read()
        assert "framework detection: wrapper=None base=deepspeed method=exact" in text, f"rank {rank}:\n{text[-3000:]}"

    # MonitorMaster writes on rank 0 only: the events carry rank 0, once each.
    points = points_of(module_server, uid, "deepspeed", STEPS)
    assert {p["rank"] for p in points} == {0}
    # Samples count both ranks' micro-batches.
    _assert_equal_series(by_name(points)[LR], _csv_events(tmp_path, LR), LR)
    assert sorted(by_name(points)[LR]) == [2 * MICRO_BATCH * (i + 1) for i in range(STEPS)]
    _deepspeed_detection(module_server, uid, stage=2)
    rows = jsonl_rows(tmp_path / "jsonl")
    assert_each_point_emitted_once(rows)
    assert {r["rank"] for r in rows} == {0} and {r["world_size"] for r in rows} == {2}


MONITOR_ERRORS = r"""
import os, sys, tempfile
import deepspeed
from deepspeed.monitor.config import get_monitor_config
from deepspeed.monitor.monitor import MonitorMaster

deepspeed.init_distributed(dist_backend="gloo")
out = tempfile.mkdtemp()
master = MonitorMaster(get_monitor_config({"csv_monitor": {"enabled": True, "output_path": out, "job_name": "j"}}))

class HostileStep:
    # A step our monitor cannot turn into an int (DeepSpeed's csv monitor just prints it).
    def __int__(self):
        raise RuntimeError("hostile step")
    def __str__(self):
        return "7"

for testing in ("0", "1"):  # read at each error: one process checks both
    os.environ["PRIMUS_LENS_TESTING"] = testing
    try:
        master.write_events([("Train/Samples/lr", 0.5, HostileStep())])
        print("ABSORBED")
    except RuntimeError as exc:
        print("RAISED", exc)
os.environ["PRIMUS_LENS_TESTING"] = "0"
try:
    master.write_events([("Train/Samples/lr", 0.5)])  # DeepSpeed's own csv monitor fails on this
except IndexError:
    print("DEEPSPEED ERROR PROPAGATED")
with open(os.path.join(out, "j", "Train_Samples_lr.csv")) as fh:
    print("CSV ROWS", len(fh.read().splitlines()) - 1)
"""


def test_deepspeed_monitor_errors_never_reach_training_unless_testing(tmp_path):
    env = exporter_env(None, tmp_path, new_workload("ds-errors"), PRIMUS_LENS_WANDB_API_REPORTING="false",
                       RANK=0, LOCAL_RANK=0, WORLD_SIZE=1, MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port(),
                       TORCH_EXTENSIONS_DIR=os.path.expanduser("~/.cache/torch_extensions"))
    proc = run_python(MONITOR_ERRORS, env, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("ABSORBED", "RAISED", "DEEPSPEED", "CSV"))]
    # Ours: absorbed (and counted) normally, raised under PRIMUS_LENS_TESTING=1; DeepSpeed's own
    # monitors ran first both times; DeepSpeed's own error reaches the caller untouched.
    assert lines == ["ABSORBED", "RAISED hostile step", "DEEPSPEED ERROR PROPAGATED", "CSV ROWS 2"], \
        proc.stdout + proc.stderr[-3000:]


@pytest.mark.parametrize("version, supported", [
    ("0.19.8", True), ("0.14.0", True), ("0.16.4+abc123", True),
    ("0.13.5", False), ("0.20.0", False), ("1.0.0", False), (None, False),
])
def test_deepspeed_adapter_enables_itself_only_on_tested_versions(version, supported):
    from primus_lens_wandb_exporter.integrations import deepspeed

    assert deepspeed.DEEPSPEED.versions.allows(version) is supported
