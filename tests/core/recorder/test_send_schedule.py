"""A synchronous job's ranks log together; their sends must not reach Lens together.

Four real processes (ranks 0-3 of one workload, real wandb offline, the exporter activated
by the installed start-up line) log in lockstep, as the ranks of a data-parallel job do, and
send to a real Lens server.  Its access lines say when each request arrived.  Sent one flush
interval after their first pending point (the rule before schedule.py), every process's
request arrives within ~50 ms of the others'; on their phases, ~0.15-0.24 s apart.
"""

import json
import subprocess
import sys
import time

from helpers.exporter import exporter_env

from primus_lens_wandb_exporter.core.config import Config
from primus_lens_wandb_exporter.core.hookspecs import hookimpl
from primus_lens_wandb_exporter.core.identity import load_identity
from primus_lens_wandb_exporter.core.recorder import Recorder
from primus_lens_wandb_exporter.core.recorder.records import _LOG
from primus_lens_wandb_exporter.core.recorder.schedule import next_send, send_phase
from primus_lens_wandb_exporter.core.registry import create_plugin_manager

RANKS = 4
LOGS = 25  # every 0.2 s: 5 s, five flush intervals
TRAINING = """
import sys, time, wandb
run = wandb.init(project="phase")
wandb.log({"loss": 2.0})  # the start-up sends (detection, run, a first batch) before the lockstep part
print("ready", flush=True)
t0 = float(sys.stdin.readline())
for k in range(%d):
    time.sleep(max(0.0, t0 + k * 0.2 - time.time()))
    wandb.log({"loss": 1.0 / (k + 1), "lr": 0.1})
print("done", flush=True)
time.sleep(0.5)
run.finish()
""" % LOGS


def test_lockstep_ranks_send_on_their_own_phases(lens_server, tmp_path):
    procs = []
    for rank in range(RANKS):
        env = exporter_env(lens_server, tmp_path / f"r{rank}", "phase-job", pod_name=f"phase-job-worker-{rank}",
                           RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=RANKS, PRIMUS_LENS_FLUSH_INTERVAL="1.0")
        (tmp_path / f"r{rank}").mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", TRAINING], env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()[-4000:]
        t0 = time.time() + 0.5
        for p in procs:
            p.stdin.write(f"{t0!r}\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout.readline().strip() == "done", p.stderr.read()[-4000:]
            p.stdin.close()
        for p in procs:
            assert p.wait(60) == 0, p.stderr.read()[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    end = t0 + (LOGS - 1) * 0.2
    arrivals = {}  # client address -> arrival times of its metrics requests during the lockstep part
    for line in lens_server.log_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "access" and rec.get("path") == "/api/v1/wandb/metrics" \
                and t0 + 0.3 <= rec["ts"] - rec["ms"] / 1000 <= end:
            arrivals.setdefault(rec["client"], []).append(rec["ts"] - rec["ms"] / 1000)
    times = sorted((t, c) for c, ts in arrivals.items() for t in ts)
    assert len(arrivals) >= RANKS and len(times) >= RANKS * 3, arrivals
    # One request a flush interval per process, not more.
    assert all(len(ts) <= 5 for ts in arrivals.values()), arrivals
    nearest = sorted(min(abs(t - u) for u, d in times if d != c) for t, c in times)
    median = nearest[len(nearest) // 2]
    assert median >= 0.08, f"requests of different ranks {median * 1000:.0f} ms apart (median): {arrivals}"


def test_phases_spread_every_number_of_ranks_over_the_interval():
    for n in (2, 3, 8, 125, 1000):
        phases = sorted(send_phase("job-a", r) for r in range(n))
        gaps = [b - a for a, b in zip(phases, phases[1:])] + [1.0 - phases[-1] + phases[0]]
        assert min(gaps) > 0.4 / n and max(gaps) < 1.7 / n, (n, min(gaps) * n, max(gaps) * n)
    # Other workloads' rank 0s are elsewhere on the interval (not all on the second).
    assert len({round(send_phase(f"job-{i}", 0), 3) for i in range(20)}) >= 15
    assert 0.0 <= send_phase("job-a", -1) < 1.0 and 0.0 <= send_phase(None, 3) < 1.0  # never raises


def test_next_send_is_the_first_slot_of_the_grid_at_or_after_now():
    assert next_send(1000.30, 1.0, 0.25) == 1001.25
    assert next_send(1000.25, 1.0, 0.25) == 1000.25
    assert next_send(1000.10, 1.0, 0.25) == 1000.25
    assert abs(next_send(1000.01, 0.2, 0.5) - 1000.1) < 1e-9
    for now in (1.7e9 + 0.123, 1.7e9 + 0.999):
        at = next_send(now, 1.0, 0.6)
        assert now <= at < now + 1.0 and abs((at - 0.6) % 1.0) < 1e-6


class _Batches:
    """A sink plugin counting the batches the recorder emits."""

    def __init__(self):
        self.count = 0

    @hookimpl
    def lens_report_metrics(self, batch):
        self.count += 1


class _Run:
    id = "r"
    project = "p"


def test_a_recorder_sends_on_its_ranks_grid_and_never_later_than_one_interval(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    sink = _Batches()
    pm = create_plugin_manager(disabled=("*",))
    pm.register(sink, name="batches")
    rec = Recorder(Config(api_reporting=False, batch_size=10**6, flush_interval=60.0),
                   load_identity({"POD_NAME": "grid-job-0", "WORKLOAD_UID": "grid-job"}), pm)
    before = time.time()
    rec._handle((_LOG, _Run(), {"loss": 1.0}, None, None, before))
    phase = send_phase("grid-job", 3)
    assert before <= rec._send_at < before + 60.0 + 1e-6
    assert abs((rec._send_at / 60.0 - phase) % 1.0) < 1e-6 or abs((rec._send_at / 60.0 - phase) % 1.0 - 1) < 1e-6
    rec._maybe_emit()
    assert sink.count == (1 if rec._send_at <= time.time() else 0)
    # A wall clock set back an hour: the points still leave one interval after the first was logged.
    rec._handle((_LOG, _Run(), {"loss": 2.0}, None, None, time.time()))
    rec._send_at = time.time() + 3600.0
    sent = sink.count
    rec._maybe_emit()
    assert sink.count == sent
    rec._pending_since -= 60.0
    rec._maybe_emit()
    assert sink.count == sent + 1
