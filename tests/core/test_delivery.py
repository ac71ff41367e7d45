"""Delivery: every point arrives once, through outages, signals and exits."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers.exporter import exporter_env, get_json, run_python, wait_for

FLOOD = """
import os, sys, wandb
n = int(sys.argv[1]); marker = sys.argv[2] if len(sys.argv) > 2 else None
wandb.init(project="flood")
names = [f"m{i}" for i in range(10)]
for step in range(n):
    wandb.log({name: step + i / 10 for i, name in enumerate(names)})
    if marker and step == n // 2 - 1:
        open(marker, "w").close()                       # first half logged
        while not os.path.exists(marker + ".go"):       # wait until the test brought Lens back
            import time; time.sleep(0.05)
wandb.finish()
"""


def _counts(server, uid):
    body = get_json(server, f"/api/v1/workloads/{uid}/metrics/available", data_source="wandb")
    return {m["name"]: m["count"] for m in body["metrics"]}


def _assert_complete(server, uid, n):
    counts = _counts(server, uid)
    assert counts == {f"m{i}": n for i in range(10)}
    # Right steps and values, nothing duplicated: every step of one metric exactly once.
    data = get_json(server, f"/api/v1/workloads/{uid}/metrics/data", data_source="wandb", metrics="m3")["data"]
    assert sorted(p["iteration"] for p in data) == list(range(n))
    assert all(p["value"] == pytest.approx(p["iteration"] + 0.3) for p in data)


@pytest.mark.slow
def test_20000_calls_deliver_all_200000_points_with_their_steps(lens_server, tmp_path):
    env = exporter_env(lens_server, tmp_path, "flood", WANDB_MODE="disabled", PRIMUS_LENS_EXIT_TIMEOUT="60")
    run_python(FLOOD, env, args=["20000"], timeout=600)
    _assert_complete(lens_server, "flood", 20000)


@pytest.mark.slow
def test_server_down_for_the_first_half_then_up_still_delivers_everything_once(lens_server, tmp_path):
    lens_server.stop()
    marker = str(tmp_path / "half")
    env = exporter_env(lens_server, tmp_path, "outage", WANDB_MODE="disabled", PRIMUS_LENS_EXIT_TIMEOUT="60",
                       PRIMUS_LENS_MAX_RETRIES="2", PRIMUS_LENS_TESTING="0")
    proc = subprocess.Popen([sys.executable, "-c", FLOOD, "10000", marker], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: os.path.exists(marker) or proc.poll() is not None, timeout=300)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        # the first half hits the dead server and goes to the spool (waited for, not slept on)
        spool = tmp_path / "spool"
        assert wait_for(lambda: spool.is_dir() and os.listdir(spool), timeout=60)
        lens_server.restart()
        open(marker + ".go", "w").close()
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_complete(lens_server, "outage", 10000)
    assert not [f for f in os.listdir(tmp_path / "spool") if f.endswith(".json")]


SIGNALLED = """
import sys, time, wandb
wandb.init(project="sig")
step = 0
while True:
    wandb.log({"a": float(step), "b": 1.0})
    step += 1
    if step % 500 == 0:
        print("logged", step, flush=True)
        time.sleep(0.01)
"""


@pytest.mark.parametrize("server_up", [True, False], ids=["server-up", "server-down"])
def test_sigterm_mid_run_delivers_or_spools_every_point_logged_before_it(lens_server, tmp_path, server_up):
    if not server_up:
        lens_server.stop()
    env = exporter_env(lens_server, tmp_path, "sigterm", WANDB_MODE="disabled", PRIMUS_LENS_EXIT_TIMEOUT="5",
                       PRIMUS_LENS_TESTING="0")
    proc = subprocess.Popen([sys.executable, "-c", SIGNALLED], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    logged = 0
    for line in proc.stdout:
        logged = int(line.split()[1])
        if logged >= 3000:
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0  # the default SIGTERM behaviour still ends the program
    if not server_up:
        lens_server.restart()
        # What was spooled is replayed by the next process that uses wandb.
        run_python("import wandb; wandb.init(project='next'); wandb.finish()",
                   exporter_env(lens_server, tmp_path, "next-process", WANDB_MODE="disabled"))
    data = get_json(lens_server, "/api/v1/workloads/sigterm/metrics/data", data_source="wandb", metrics="a")["data"]
    steps = sorted(p["iteration"] for p in data)
    assert len(steps) >= logged and steps == list(range(len(steps)))


def _blackhole():
    """A TCP port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def test_a_blackholed_server_never_holds_exit_past_the_deadline(tmp_path):
    hole = _blackhole()
    try:
        env = exporter_env(None, tmp_path, "blackhole", WANDB_MODE="disabled", PRIMUS_LENS_EXIT_TIMEOUT="1",
                           PRIMUS_LENS_HTTP_TIMEOUT="30", PRIMUS_LENS_TESTING="0",
                           PRIMUS_LENS_API_BASE_URL=f"http://127.0.0.1:{hole.getsockname()[1]}/api/v1")
        # Without the deadline, one 30 s request timeout per batch would hold this process for minutes.
        run_python("""
import wandb
wandb.init(project="p")
for i in range(2000):
    wandb.log({"loss": float(i)})
wandb.finish()
""", env, timeout=45)
    finally:
        hole.close()
    from primus_lens_wandb_exporter.sinks.spool import Spool

    _files, points, _size = Spool(str(tmp_path / "spool")).backlog()
    assert points == 2000


def test_local_jsonl_follows_the_guides_layout(tmp_path):
    out = tmp_path / "out"
    env = exporter_env(None, tmp_path, "jsonl", WANDB_MODE="disabled", PRIMUS_LENS_WANDB_OUTPUT_PATH=str(out),
                       PRIMUS_LENS_WANDB_API_REPORTING="false", NODE_RANK="1", LOCAL_RANK="2", RANK="10",
                       WORLD_SIZE="16")
    run_python("""
import wandb
wandb.init(project="p")
for i in range(5):
    wandb.log({"loss": float(i)})
wandb.finish()
""", env)
    import json

    lines = [json.loads(l) for l in (out / "node_1" / "rank_2" / "wandb_metrics.jsonl").read_text().splitlines()]
    assert [(l["name"], l["step"], l["value"], l["rank"]) for l in lines] == [("loss", i, float(i), 10) for i in range(5)]
    assert not list((tmp_path / "spool").glob("*.json"))  # API reporting off: nothing sent or spooled


def test_save_local_false_writes_no_file(tmp_path):
    out = tmp_path / "out"
    env = exporter_env(None, tmp_path, "jsonl-off", WANDB_MODE="disabled", PRIMUS_LENS_WANDB_OUTPUT_PATH=str(out),
                       PRIMUS_LENS_WANDB_SAVE_LOCAL="false", PRIMUS_LENS_WANDB_API_REPORTING="false")
    run_python("import wandb; wandb.init(project='p'); wandb.log({'loss': 1.0}); wandb.finish()", env)
    assert not out.exists()


def test_node_and_local_rank_without_rank_give_each_process_its_own_file(tmp_path):
    # Issue 10 item 9: each variable has its own default; NODE_RANK/LOCAL_RANK count without RANK.
    out = tmp_path / "out"
    env = exporter_env(None, tmp_path, "ranks", WANDB_MODE="disabled", PRIMUS_LENS_WANDB_OUTPUT_PATH=str(out),
                       PRIMUS_LENS_WANDB_API_REPORTING="false", NODE_RANK="1", LOCAL_RANK="2")
    run_python("import wandb; wandb.init(project='p'); wandb.log({'loss': 1.0}); wandb.finish()", env)
    import json

    (line,) = [json.loads(l) for l in (out / "node_1" / "rank_2" / "wandb_metrics.jsonl").read_text().splitlines()]
    assert (line["node_rank"], line["local_rank"], line["rank"], line["world_size"]) == (1, 2, 0, 1)
    assert not (out / "node_0").exists()
