"""Delivery faults of issue 10 (items 4-8), each with real processes: a real Lens server (with
a token where it matters), a hanging socket, SIGKILL, a 1 MB and a read-only filesystem."""

import glob
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers.exporter import exporter_env, get_json, run_python, wait_for

from primus_lens_wandb_exporter.sinks.spool import Spool


def _counts(server, uid):
    body = get_json(server, f"/api/v1/workloads/{uid}/metrics/available", data_source="wandb")
    return {m["name"]: m["count"] for m in body["metrics"]}


def _steps(server, uid, name):
    data = get_json(server, f"/api/v1/workloads/{uid}/metrics/data", token=server.token, data_source="wandb",
                    metrics=name)["data"]
    return sorted(p["iteration"] for p in data)


def _stats(spool_dir):
    """The stats file the (finished) process left for doctor (newest)."""
    from primus_lens_wandb_exporter.cli.doctor import _read_stats

    stats = _read_stats(str(spool_dir))
    assert stats, f"no stats for {spool_dir}"
    return stats[-1]


def _spooled_steps(spool_dir, name):
    """{step} of metric ``name`` in every spool file (waiting or claimed by a dead process)."""
    steps = []
    for path in glob.glob(os.path.join(str(spool_dir), "*.json*")):
        if path.endswith(".tmp") or ".bad" in path:
            continue
        with open(path, "rb") as fh:
            record = json.loads(fh.read())
        if record["endpoint"] == "/wandb/metrics":
            payload = record["payload"]
            steps.extend(p["step"] for p in payload["metrics"] if p["name"] == name)
            steps.extend(r["step"] for r in payload.get("rows") or () if name in r["values"])
    return steps


def _blackhole():
    """A TCP port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


# ------------------------------------------------------------------ item 4: bad keys, huge rows


def test_bad_keys_are_filtered_alone_and_a_120000_key_row_arrives_whole(lens_server, tmp_path):
    env = exporter_env(lens_server, tmp_path, "badkeys", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                       PRIMUS_LENS_EXIT_TIMEOUT="120")
    proc = run_python("""
import wandb
wandb.init(project="p")
for step in range(5):
    # W&B accepts both bad keys; Lens refuses them: they must not take loss/acc with them.
    wandb.log({"loss": float(step), "acc": 0.5, "k" * 600: 1.0, "bad\\x00key": 2.0})
wandb.log({f"wide/{i}": float(i) for i in range(120_000)})
wandb.finish()
""", env, timeout=600)
    assert _steps(lens_server, "badkeys", "loss") == [0, 1, 2, 3, 4]
    assert _steps(lens_server, "badkeys", "acc") == [0, 1, 2, 3, 4]
    counts = _counts(lens_server, "badkeys")
    assert sum(1 for name in counts if name.startswith("wide/")) == 120_000
    assert all(counts[f"wide/{i}"] == 1 for i in (0, 59_999, 119_999))
    stats = _stats(tmp_path / "spool")
    assert stats["recorder"]["filtered"] == 10  # 2 bad keys x 5 rows, counted
    assert stats["http"]["rejected_points"] == 0 and stats["http"]["rejected_batches"] == 0
    assert stats["http"]["split_requests"] >= 2
    # One line per cause, not one per row.
    assert proc.stderr.count("must be at most 512 characters") == 1, proc.stderr[-3000:]
    assert proc.stderr.count("must not contain NUL") == 1, proc.stderr[-3000:]


# ------------------------------------------------------------------ item 4: rejected is not lost

TWO_HALVES = """
import os, sys, time, wandb
marker = sys.argv[1]
wandb.init(project="auth")
for step in range(200):
    wandb.log({"loss": float(step)})
    if step == 99:
        open(marker, "w").close()
        while not os.path.exists(marker + ".go"):
            time.sleep(0.05)
wandb.finish()
"""


def test_401_batches_are_kept_and_replayed_once_the_server_accepts_the_token(lens_server_factory, tmp_path):
    server = lens_server_factory(token="old-token")
    marker = str(tmp_path / "half")
    env = exporter_env(server, tmp_path, "auth", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                       PRIMUS_LENS_API_TOKEN="new-token", PRIMUS_LENS_EXIT_TIMEOUT="30")
    proc = subprocess.Popen([sys.executable, "-c", TWO_HALVES, marker], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: os.path.exists(marker) or proc.poll() is not None, timeout=120)
        # Every batch of the first half is refused (401) and kept on disk, not set aside for good.
        assert wait_for(lambda: sorted(_spooled_steps(tmp_path / "spool", "loss")) == list(range(100)),
                        timeout=30), sorted(_spooled_steps(tmp_path / "spool", "loss"))
        assert not glob.glob(str(tmp_path / "spool" / "rejected" / "*.json"))
        server.token = "new-token"  # the operator fixes the token server-side
        server.restart()
        open(marker + ".go", "w").close()
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _steps(server, "auth", "loss") == list(range(200))
    assert _spooled_steps(tmp_path / "spool", "loss") == []
    # One line for the cause (not one per batch), one when Lens accepts again.
    assert err.count("refused our requests with HTTP 401") == 1, err[-3000:]
    assert err.count("accepts our requests again") == 1, err[-3000:]
    stats = _stats(tmp_path / "spool")
    assert stats["http"]["auth_rejected_batches"] >= 1 and stats["http"]["rejected_batches"] == 0


# ------------------------------------------------------------------ item 5: bounded loss window

STEADY = """
import sys, time, wandb
wandb.init(project="window")
step = 0
start = time.time()
while True:
    wandb.log({"a": float(step), "b": 1.0})
    step += 1
    if step % 50 == 0:
        # Printed after the log call returned: everything up to this step was logged by then.
        print("logged", step, time.time(), flush=True)
        time.sleep(0.05)
"""

#: The documented bound (docs/protocol.md "Delivery"): flush interval + write-ahead delay, plus
#: generous slack for a loaded 2-core CI machine (a stalled fsync of the spool). The benchmark
#: prints the measured window.
WINDOW_BOUND_S = 1.0 + 0.25 + 2.5


@pytest.mark.parametrize("server", ["down", "blackhole"])
def test_sigkill_while_lens_is_unreachable_loses_at_most_the_write_ahead_window(tmp_path, server):
    hole = _blackhole() if server == "blackhole" else None
    try:
        url = f"http://127.0.0.1:{hole.getsockname()[1] if hole else 9}/api/v1"
        env = exporter_env(None, tmp_path, "window", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                           PRIMUS_LENS_API_BASE_URL=url, PRIMUS_LENS_HTTP_TIMEOUT="30",
                           PRIMUS_LENS_FLUSH_INTERVAL="1.0")
        proc = subprocess.Popen([sys.executable, "-c", STEADY], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        kill_after = random.uniform(4.5, 7.5)  # past the bound: something must be on disk
        logged = []  # (step, time)
        started = None
        for line in proc.stdout:
            _word, step, when = line.split()
            logged.append((int(step), float(when)))
            started = started or float(when)
            if float(when) - started >= kill_after:
                break
        proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        proc.communicate(timeout=30)
    finally:
        if hole is not None:
            hole.close()
    must_have = max((step for step, when in logged if when <= killed_at - WINDOW_BOUND_S), default=0)
    assert must_have > 0
    stored = sorted(_spooled_steps(tmp_path / "spool", "a"))
    # Without the write-ahead nothing at all is on disk this early (retries run for ~20 s first).
    assert stored[:must_have] == list(range(must_have)), (must_have, len(stored), kill_after)


# ------------------------------------------------------------------ item 6: full / read-only spool

FLOOD = """
import sys, wandb
n = int(sys.argv[1])
wandb.init(project="flood")
for step in range(n):
    wandb.log({f"m{i}": step + i / 10 for i in range(10)})
wandb.finish()
"""


@pytest.fixture
def small_mount(tmp_path):
    """``mount(options) -> path``: a real tmpfs (skipped where mounting is not permitted)."""
    mounted = []

    def mount(options):
        path = tmp_path / f"mnt{len(mounted)}"
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); needs root")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _doctor(env):
    proc = subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.cli", "doctor", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    return json.loads(proc.stdout), proc


def test_a_full_spool_counts_every_lost_point_leaves_no_tmp_file_and_doctor_shows_it(tmp_path, small_mount):
    spool = small_mount("size=1m") / "spool"
    env = exporter_env(None, tmp_path, "fullspool", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                       PRIMUS_LENS_SPOOL_DIR=str(spool), PRIMUS_LENS_EXIT_TIMEOUT="2")
    n = 20_000
    proc = run_python(FLOOD, env, args=[str(n)], timeout=600)
    assert not [f for f in os.listdir(spool) if f.endswith(".tmp")]
    stats = _stats(spool)
    http = stats["http"]
    assert http["spool_write_errors"] > 0
    _files, kept, _ = Spool(str(spool)).backlog()
    # Every point is on disk or counted as lost: nothing vanishes silently.
    assert kept + http["spool_dropped_points"] == n * 10, (kept, http["spool_dropped_points"])
    assert proc.stderr.count("spool write to") == 1, proc.stderr[-3000:]
    report, _ = _doctor(env)
    text = "\n".join(report["problems"])
    assert f"{http['spool_dropped_points']} points lost" in text, text


def test_a_read_only_spool_counts_every_point_as_lost_and_doctor_says_so(tmp_path, small_mount):
    spool = small_mount("size=1m,ro")
    env = exporter_env(None, tmp_path, "rospool", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                       PRIMUS_LENS_SPOOL_DIR=str(spool), PRIMUS_LENS_EXIT_TIMEOUT="2")
    n = 5_000
    run_python(FLOOD, env, args=[str(n)], timeout=600)
    stats = _stats(spool)  # read from outside the read-only spool
    assert stats["http"]["spool_dropped_points"] == n * 10
    report, proc = _doctor(env)
    assert proc.returncode == 1
    assert report["spool"]["writable"] is False
    text = "\n".join(report["problems"])
    assert "is not writable" in text and f"{n * 10} points lost" in text, text
    human = subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.cli", "doctor"], env=env,
                           capture_output=True, text=True, timeout=300).stdout
    assert f"✗ spool {spool}" in human and f"points lost {n * 10}" in human, human


# ------------------------------------------------------------------ item 7: claims survive pid reuse


def test_a_claim_of_a_pid_now_used_by_another_process_is_replayed(lens_server, tmp_path):
    from primus_lens_wandb_exporter._procs import process_start

    spool_dir = tmp_path / "spool"
    spool = Spool(str(spool_dir))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        wait_for(lambda: process_start(other.pid) is not None)
        start = process_start(other.pid)

        def claimed_file(workload, owner_start):
            payload = {"source": "wandb", "workload_uid": workload, "pod_name": f"{workload}-pod-0", "run_id": "r",
                       "rank": 0, "metrics": [{"name": "x", "value": float(i), "step": i} for i in range(5)]}
            spool.write("/wandb/metrics", payload, 5)
            (path,) = spool.files()
            claimed = f"{path}.claimed-{other.pid}-{owner_start}"
            os.replace(path, claimed)
            return claimed

        # Same pid, older start time: the pid was reused (a restarted container's pid 1); the
        # owner is gone and its file must be replayed.
        stale = claimed_file("reused", start - 5000)
        # Same pid and start time: the owner still runs; its claim is left alone.
        live = claimed_file("owned", start)
        env = exporter_env(lens_server, tmp_path, "doctor-claims")
        report, _ = _doctor(env)
        owners = {os.path.basename(c["file"]): c for c in report["claims"]}
        assert owners[os.path.basename(stale)]["alive"] is False
        assert owners[os.path.basename(live)]["alive"] is True and owners[os.path.basename(live)]["pid"] == other.pid
        run_python("import wandb; wandb.init(project='next'); wandb.log({'y': 1.0}); wandb.finish()",
                   exporter_env(lens_server, tmp_path, "next", WANDB_MODE="disabled"))
        assert _steps(lens_server, "reused", "x") == [0, 1, 2, 3, 4]
        assert os.path.exists(live) and not os.path.exists(stale)
    finally:
        other.kill()
        other.wait()


# ------------------------------------------------------------------ item 8: one exit deadline

FINISHING = """
import time, wandb
wandb.init(project="p")
for i in range(3000):
    wandb.log({"loss": float(i)})
print("finishing", flush=True)
wandb.finish()
"""


def test_finish_and_exit_together_take_one_deadline_against_a_hanging_server(tmp_path):
    deadline = 5.0
    hole = _blackhole()
    try:
        env = exporter_env(None, tmp_path, "hang", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                           PRIMUS_LENS_EXIT_TIMEOUT=str(deadline), PRIMUS_LENS_HTTP_TIMEOUT="60",
                           PRIMUS_LENS_API_BASE_URL=f"http://127.0.0.1:{hole.getsockname()[1]}/api/v1")
        proc = subprocess.Popen([sys.executable, "-c", FINISHING], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "finishing"
        began = time.monotonic()
        proc.communicate(timeout=120)
        took = time.monotonic() - began
    finally:
        hole.close()
    assert proc.returncode == 0
    # Correctness bound, not a speed figure: finish + interpreter exit within ONE deadline
    # (plus slack for a loaded machine), not finish's deadline and then the exit handler's
    # (two deadlines, >= 10 s, was the defect).
    print(f"finish + exit took {took:.2f} s (deadline {deadline} s)")
    assert took < 2 * deadline - 1, took
    _files, points, _ = Spool(str(tmp_path / "spool")).backlog()
    assert points == 3000  # nothing lost: what the hanging server never answered is on disk


def test_spool_faults_reach_lens_with_the_next_delivered_batch(lens_server, tmp_path, small_mount):
    """Lens down while the spool is full: the losses are counted, and once Lens is back the next
    metrics batch carries them in its ``exporter`` object (SPEC), which Lens shows per pod."""
    spool = small_mount("size=1m") / "spool"
    lens_server.stop()
    marker = str(tmp_path / "half")
    env = exporter_env(lens_server, tmp_path, "faults-reported", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                       PRIMUS_LENS_SPOOL_DIR=str(spool), PRIMUS_LENS_EXIT_TIMEOUT="30",
                       PRIMUS_LENS_MAX_RETRIES="1")
    script = """
import os, sys, time, wandb
marker = sys.argv[1]
wandb.init(project="p")
for step in range(20000):
    wandb.log({f"m{i}": float(step) for i in range(10)})
    if step == 9999:
        open(marker, "w").close()
        while not os.path.exists(marker + ".go"):
            time.sleep(0.05)
wandb.finish()
"""
    proc = subprocess.Popen([sys.executable, "-c", script, marker], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: os.path.exists(marker) or proc.poll() is not None, timeout=300)
        time.sleep(1.5)  # the first half's last batches hit the full spool
        lens_server.start()
        open(marker + ".go", "w").close()
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    http = _stats(spool)["http"]
    assert http["spool_write_errors"] > 0 and http["spool_dropped_points"] > 0
    detail = get_json(lens_server, "/api/v1/workloads/faults-reported")
    (report,) = detail["exporters"]
    assert report["stats"]["spool_write_errors"] > 0
    assert report["stats"]["spool_dropped_points"] == http["spool_dropped_points"]


def test_a_batch_lens_refuses_as_a_whole_is_kept_counted_and_shown_by_doctor(lens_server, tmp_path):
    # A workload uid over the server's 256 characters: the envelope is invalid, every request 400s.
    uid = "w" * 300
    env = exporter_env(lens_server, tmp_path, uid, WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0")
    proc = run_python("""
import wandb
wandb.init(project="p")
for step in range(5):
    wandb.log({"loss": float(step)})
wandb.finish()
""", env)
    http = _stats(tmp_path / "spool")["http"]
    assert http["rejected_points"] == 5 and http["rejected_batches"] >= 1
    report, doctor = _doctor(env)
    assert doctor.returncode == 1
    assert report["rejected"]["points"] == 5
    (problem,) = [p for p in report["problems"] if "rejected by Lens as a whole" in p]
    # The advised command removes what it resent (without --delete the line never went away).
    assert "primus-lens replay --delete" in problem, problem
    # One line per cause and endpoint, not one per batch.
    assert proc.stderr.count("Lens rejected a /wandb/metrics request") == 1, proc.stderr[-3000:]


# ------------------------------------------------------------------ exit: the worker frees nothing during finalization

SLOW_TO_FREE = r"""
import numbers, sys, threading, time, wandb

class Value:
    # A logged value whose destructor, like JAX's array, must not run while the interpreter
    # finalizes: it says when it starts and when it ends (a thread torn down mid-way never ends).
    def __float__(self):
        return 1.5
    def __del__(self):
        if threading.current_thread() is not threading.main_thread():
            sys.stderr.write("free-start\n"); sys.stderr.flush()
            time.sleep(0.5)
            sys.stderr.write("free-end\n"); sys.stderr.flush()

numbers.Real.register(Value)
wandb.init(project="p")
wandb.log({"x": Value()})
wandb.log({"x": 2.0})  # wandb's summary lets go of the Value: only the exporter's queue holds it
"""


def test_the_exit_flush_returns_only_after_the_worker_dropped_the_logged_values(tmp_path):
    # MaxText 0.2.5 under JAX aborted at exit ("FATAL: exception not rethrown"): the exit flush
    # answered from inside the drain, the main thread went on to finalize, and the worker freed
    # the drained chunk's JAX arrays as it was being torn down.  The flush now answers after
    # the chunk is gone, so the destructor always completes before the main thread moves on.
    env = exporter_env(None, tmp_path, "free", WANDB_MODE="disabled", PRIMUS_LENS_WANDB_API_REPORTING="false",
                       PRIMUS_LENS_WANDB_OUTPUT_PATH=str(tmp_path / "out"))
    proc = run_python(SLOW_TO_FREE, env)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("free-")]
    assert lines == ["free-start", "free-end"], proc.stderr[-2000:]
