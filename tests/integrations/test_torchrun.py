"""The user guide's Scenario 2 for real: ``torchrun --nproc_per_node=2`` DDP on gloo.

Each test launches ``examples/torchrun_ddp.py`` under torchrun (two real processes,
real wandb offline) with the exporter activated by the installed start-up line, and
reads back what the real Lens server stored.
"""

import glob
import os
import subprocess
import sys

import pytest

from helpers.server import free_port
from helpers.e2e import by_name, jsonl_rows, mirrored_points, module_server, new_workload  # noqa: F401 (fixture)
from helpers.exporter import ROOT, exporter_env, get_json, metric_points, wait_for, wandb_offline_records, workload
from helpers.wandb_oracle import assert_same_points, jsonl_points, wandb_expected_points

EXAMPLE = os.path.join(ROOT, "examples", "torchrun_ddp.py")
STEPS = 8
METRICS = {"loss", "accuracy", "rank_id", "learning_rate"}


def _torchrun(env, *args, timeout=240, log_dir=None):
    logs = ["--log-dir", str(log_dir), "--redirects", "3"] if log_dir else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={free_port()}", *logs, EXAMPLE, "--steps", str(STEPS), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"torchrun exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _env(server, tmp_path, uid):
    env = exporter_env(server, tmp_path, uid, PRIMUS_LENS_WANDB_OUTPUT_PATH=tmp_path / "jsonl",
                       OMP_NUM_THREADS="1")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # torchrun sets its own
    return env


def _points_when(server, uid, count):
    pts = wait_for(lambda: (lambda p: p if len(p) >= count else None)(metric_points(server, uid)), timeout=30)
    return pts or metric_points(server, uid)


def test_torchrun_ddp_only_rank0_logs_points_carry_rank0_and_rank1_sends_nothing(module_server, tmp_path):
    uid = new_workload("torchrun-rank0")
    env = _env(module_server, tmp_path, uid)
    env["PRIMUS_LENS_WANDB_DEBUG"] = "true"
    _torchrun(env, log_dir=tmp_path / "logs")

    points = _points_when(module_server, uid, STEPS * len(METRICS))
    assert {p["rank"] for p in points} == {0}, "only rank 0 logs to W&B"
    series = by_name(points)
    assert set(series) == METRICS
    for name in METRICS:
        assert sorted(series[name]) == list(range(STEPS)), name
    assert set(series["rank_id"].values()) == {0.0}
    assert len(points) == STEPS * len(METRICS)

    info = workload(module_server, uid)
    assert info["ranks"] == [0]
    assert [r["rank"] for r in info["runs"]] == [0], info["runs"]
    det = info["detection"]
    assert (det["wrapper"], det["base"], det["method"]) == (None, "pytorch", "exact"), det
    pytorch = det["evidence"]["base_frameworks"]["pytorch"]
    assert pytorch["distributed"] is True and pytorch["backend"] == "gloo" and pytorch["world_size"] == 2
    # Rank 1 never touched W&B: the adapters were active there, yet its Recorder never
    # started, so it sent nothing at all (no points, no run, no detection).
    (rank1_stderr,) = glob.glob(str(tmp_path / "logs" / "*" / "attempt_0" / "1" / "stderr.log"))
    with open(rank1_stderr, errors="replace") as fh:
        rank1 = fh.read()
    assert "PyTorch adapter installed" in rank1, rank1[-3000:]
    assert "recorder started" not in rank1 and "queued for reporting" not in rank1, rank1[-3000:]
    rows = jsonl_rows(tmp_path / "jsonl")
    assert {(r["node_rank"], r["local_rank"], r["rank"]) for r in rows} == {(0, 0, 0)}
    assert not os.path.exists(tmp_path / "jsonl" / "node_0" / "rank_1")
    assert {r["world_size"] for r in rows} == {2}


@pytest.fixture(scope="module")
def all_ranks_run(module_server, tmp_path_factory):
    """One torchrun where every rank logs its own W&B run, shared by the tests that read it."""
    tmp_path = tmp_path_factory.mktemp("torchrun-all")
    uid = new_workload("torchrun-all")
    _torchrun(_env(module_server, tmp_path, uid), "--all-ranks-log")
    return uid, tmp_path


@pytest.mark.slow
def test_torchrun_ddp_every_rank_logging_its_own_run_is_kept_apart_by_rank(module_server, all_ranks_run):
    uid, _tmp_path = all_ranks_run

    points = _points_when(module_server, uid, 2 * STEPS * len(METRICS))
    assert {p["rank"] for p in points} == {0, 1}
    per_rank = {rank: by_name([p for p in points if p["rank"] == rank]) for rank in (0, 1)}
    for rank, series in per_rank.items():
        assert set(series) == METRICS
        assert sorted(series["loss"]) == list(range(STEPS))
        assert set(series["rank_id"].values()) == {float(rank)}, f"rank {rank} got another rank's points"
    # Each rank trains on its own shard: the local losses differ.
    assert per_rank[0]["loss"] != per_rank[1]["loss"]

    info = workload(module_server, uid)
    assert info["ranks"] == [0, 1]
    runs = {r["rank"]: r["run_id"] for r in info["runs"]}
    assert set(runs) == {0, 1} and runs[0] != runs[1], info["runs"]
    assert info["detection"]["base"] == "pytorch" and info["detection"]["method"] == "exact"

    available = get_json(module_server, f"/api/v1/workloads/{uid}/metrics/available", data_source="wandb")
    assert {m["name"] for m in available["metrics"]} == METRICS


@pytest.mark.slow
def test_torchrun_every_rank_wandb_history_is_mirrored_exactly_per_rank(module_server, all_ranks_run):
    """Issue 10's oracle, per rank: each rank's own W&B run (its .wandb file) is in Lens under that
    rank and run, and in that rank's JSONL sink, point for point (row, step, value)."""
    uid, tmp_path = all_ranks_run
    runs = sorted(glob.glob(str(tmp_path / "wandb" / "offline-run-*")))
    assert len(runs) == 2, runs
    ranks = set()
    for run_dir in runs:
        history, _ = wandb_offline_records(run_dir)
        (rank,) = {int(row["rank_id"]) for row in history}  # the rank that wrote this run
        run_id = run_dir.rsplit("-", 1)[1]
        ranks.add(rank)
        expected = wandb_expected_points(run_dir)
        assert len(expected) == STEPS * len(METRICS)
        where = f"rank {rank} run {run_id}"
        assert_same_points(expected, mirrored_points(module_server, uid, expected, run_id=run_id, rank=rank),
                           f"Lens vs W&B history, {where}")
        assert_same_points(expected, jsonl_points(tmp_path / "jsonl", rank=rank, run_id=run_id),
                           f"JSONL sink vs W&B history, {where}")
    assert ranks == {0, 1}
