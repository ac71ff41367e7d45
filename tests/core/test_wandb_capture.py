"""The raw wandb integration: Lens stores exactly what the user's W&B run recorded.

Each test runs a real program with real wandb (offline or disabled) in a fresh
interpreter -- the installed start-up line activates the exporter -- against the
real Lens server, and compares with wandb's own offline record where there is one.
"""

import math

import pytest

from helpers.scenarios import SCENARIO
from helpers.exporter import (exporter_env, get_json, metric_points, run_python, wandb_offline_records,
                              wandb_run_dir, workload)

EXPECTED = {
    ("loss", 0): 1.0, ("accuracy", 0): 0.1, ("loss", 1): 0.9, ("part_a", 2): 1.0, ("part_b", 2): 2.0,
    ("explicit", 10): 5.0, ("explicit2", 10): 6.0, ("after", 10): 7.0,
    ("np32", 11): 0.5, ("np_int", 11): 3.0, ("t0", 11): 2.5, ("nested.x", 11): 1.0, ("nested.y.z", 11): 2.0,
    ("nan", 11): "NaN", ("inf", 11): "Infinity", ("ninf", 11): "-Infinity", ("flag", 11): 1.0,
    ("accum", 12): 1.0, ("grp.v", 13): 1.0,
    ("loss", 14): 0.5, ("accuracy", 14): 0.5, ("loss", 15): 0.4, ("accuracy", 15): 0.6,
    ("loss", 16): 0.3, ("accuracy", 16): 0.7,
    ("final_metric", 16): 42.0,
}


def _lens_points(server, uid):
    return {(p["metric_name"], p["iteration"]): p["value"] for p in metric_points(server, uid)}


def _approx(expected):
    return {k: (pytest.approx(v) if isinstance(v, float) else v) for k, v in expected.items()}


def _wire(value):
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _flatten(row, prefix=""):
    out = {}
    for key, value in row.items():
        if isinstance(value, dict) and "_type" not in value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_offline_run_every_call_shape_reaches_lens_with_wandbs_steps(lens_server, tmp_path):
    run_python(SCENARIO, exporter_env(lens_server, tmp_path, "capture-offline"))
    points = _lens_points(lens_server, "capture-offline")
    assert points == _approx(EXPECTED)
    # And it is what W&B itself recorded (numbers only; W&B keeps strings and lists, Lens filters them).
    history, summary = wandb_offline_records(wandb_run_dir(tmp_path))
    seen_by_wandb = {}
    for row in history:
        for key, value in _flatten(row).items():
            if not key.startswith("_") and isinstance(value, (int, float)):
                seen_by_wandb[(key, row["_step"])] = _wire(float(value))
    lens_history = {k: v for k, v in points.items() if k[0] != "final_metric"}
    assert lens_history == _approx(seen_by_wandb)
    assert summary["final_metric"] == 42.0


def test_users_wandb_run_gets_no_extra_keys(lens_server, tmp_path):
    run_python(SCENARIO, exporter_env(lens_server, tmp_path, "capture-keys"))
    history, summary = wandb_offline_records(wandb_run_dir(tmp_path))
    logged = {"loss", "accuracy", "part_a", "part_b", "explicit", "explicit2", "after", "np32", "np_int", "t0",
              "nested.x", "nested.y.z", "nan", "inf", "ninf", "text", "lst", "flag", "none", "accum",
              "grp.v"}
    keys = {k for row in history for k in row if not k.startswith("_")}
    assert keys <= logged
    assert not any(k.startswith("_primus") for k in keys | set(summary))


def test_disabled_mode_is_captured_the_same_way(lens_server, tmp_path):
    env = exporter_env(lens_server, tmp_path, "capture-disabled", WANDB_MODE="disabled")
    run_python(SCENARIO, env)
    points = _lens_points(lens_server, "capture-disabled")
    # Disabled mode has no summary callback: everything logged is there, the summary-only key is not.
    expected = {k: v for k, v in EXPECTED.items() if k[0] != "final_metric"}
    assert points == _approx(expected)


def test_run_identity_config_and_status_reach_lens(lens_server, tmp_path):
    run_python(SCENARIO, exporter_env(lens_server, tmp_path, "capture-run"))
    body = workload(lens_server, "capture-run")
    (run,) = body["runs"]
    assert run["project"] == "proj" and run["name"] == "exp-1" and run["status"] == "finished"
    assert run["config"]["lr"] == 0.001 and run["config"]["batch_size"] == 32 and run["config"]["extra"] == 1
    assert run["tags"] == ["t1"]
    assert run["summary"]["final_metric"] == 42.0
    assert body["pods"] == ["capture-run-pod-0"]


def test_finish_delivers_before_it_returns(lens_server, tmp_path):
    code = """
import sys, requests, wandb
wandb.init(project="p")
for i in range(100):
    wandb.log({"loss": 1.0 / (i + 1)})
wandb.finish()
# Still inside the training process: everything logged is already stored.
body = requests.get(sys.argv[1] + "/api/v1/workloads/capture-finish/metrics/sources").json()
print("COUNT", body["data_sources"][0]["count"])
"""
    env = exporter_env(lens_server, tmp_path, "capture-finish", PRIMUS_LENS_FLUSH_INTERVAL="60")
    proc = run_python(code, env, args=[lens_server.url])
    assert "COUNT 100" in proc.stdout


def test_system_metrics_when_enabled_use_the_guides_names(lens_server, tmp_path):
    code = """
import time, wandb
wandb.init(project="p")
for i in range(30):
    wandb.log({"loss": 1.0})
    time.sleep(0.05)
wandb.finish()
"""
    env = exporter_env(lens_server, tmp_path, "capture-sys", PRIMUS_LENS_WANDB_ENHANCE_METRICS="true",
                       PRIMUS_LENS_SYSMETRICS_INTERVAL="0.2")
    run_python(code, env)
    names = {m["name"] for m in get_json(lens_server, "/api/v1/workloads/capture-sys/metrics/available",
                                         data_source="wandb")["metrics"]}
    assert {"_primus_sys_cpu_percent", "_primus_sys_memory_percent", "loss"} <= names
    # Opt-in system metrics are the one documented addition to the user's W&B run.
    history, _ = wandb_offline_records(wandb_run_dir(tmp_path))
    assert any("_primus_sys_cpu_percent" in row for row in history)


def test_without_enhance_metrics_no_system_metric_is_sent(lens_server, tmp_path):
    code = """
import wandb
wandb.init(project="p")
wandb.log({"loss": 1.0})
wandb.finish()
"""
    run_python(code, exporter_env(lens_server, tmp_path, "capture-nosys"))
    names = {m["name"] for m in get_json(lens_server, "/api/v1/workloads/capture-nosys/metrics/available",
                                         data_source="wandb")["metrics"]}
    assert names == {"loss"}


FORK_SCENARIO = """
import os, wandb
run = wandb.init(project="proj", name="parent")
wandb.log({"parent_loss": 1.0})
pid = os.fork()
if pid == 0:  # a multiprocessing-style worker with its own run
    child = wandb.init(project="proj", name="child", reinit=True)
    for i in range(5):
        child.log({"child_loss": float(i)})
    child.finish()
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status
wandb.log({"parent_loss": 0.5})
wandb.finish()
"""


def test_a_forked_child_with_its_own_run_reaches_lens(lens_server, tmp_path):
    # The child inherits the patched wandb and the parent's Recorder object: it must get a
    # worker of its own rather than queue into the parent's (whose thread is not there).
    uid = "capture-fork"
    run_python(FORK_SCENARIO, exporter_env(lens_server, tmp_path, uid, WANDB_MODE="disabled"))
    points = _lens_points(lens_server, uid)
    assert {k: v for k, v in points.items() if k[0] == "child_loss"} == {("child_loss", i): float(i) for i in range(5)}
    assert points[("parent_loss", 0)] == 1.0 and points[("parent_loss", 1)] == 0.5


NUL_SCENARIO = r'''
import wandb
run = wandb.init(project="proj", config={"path": "a\x00b", "k\x00": 1, "ok": "plain"}, tags=["t\x00"],
                 name="exp\x00one", group="g" * 2000)
run.summary["note"] = "x\x00y"
run.log({"loss": 1.0})
run.finish()
'''


def test_a_config_with_nul_reaches_lens_with_the_character_replaced(lens_server, tmp_path):
    """The server refuses NUL in stored JSON (PostgreSQL cannot hold it), which would refuse the
    whole run report; the exporter sends U+FFFD in its place, so the run arrives."""
    uid = "capture-nul"
    run_python(NUL_SCENARIO, exporter_env(lens_server, tmp_path, uid))
    (run,) = workload(lens_server, uid)["runs"]
    assert run["config"]["path"] == "a\ufffdb" and run["config"]["k\ufffd"] == 1 and run["config"]["ok"] == "plain"
    assert run["tags"] == ["t\ufffd"] and run["summary"]["note"] == "x\ufffdy"
    # The name's NUL and a group past the server's 512 characters would refuse the whole report.
    assert run["name"] == "exp\ufffdone" and run["group"] == "g" * 512
    assert run["status"] == "finished"
