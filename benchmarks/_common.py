"""Shared bits of the exporter benchmarks: start a real Lens server, a blackhole, stats."""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests


#: Start of a benchmark worker script (``python -c``): a wandb run and the logged dict,
#: ``n = int(sys.argv[1])`` measured calls to follow, after 2,000 warm-up calls of ``log(data)``.
WANDB_WORKER_SETUP = r"""
import collections, gc, itertools, json, sys, time
import wandb
n = int(sys.argv[1])
run = wandb.init(project="bench", settings=wandb.Settings(x_disable_stats=True))
data = {f"metric_{i}": 0.1 * i for i in range(10)}
log = wandb.log
for i in range(2000):   # warm-up, not measured
    log(data)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The real Lens server as a subprocess on a temporary SQLite database."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lens-bench-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = self.url + "/api/v1"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "primus_lens_wandb_exporter.server", "--port", str(self.port),
             "--db", f"sqlite:///{self.dir}/lens.db", "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def blackhole():
    """A port that accepts TCP connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def base_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRIMUS_LENS_", "WANDB_"))}
    env.update({"WANDB_SILENT": "true", "WANDB_X_DISABLE_STATS": "true", "POD_NAME": "bench-pod-0",
                "WORKLOAD_UID": "bench", "PRIMUS_LENS_SPOOL_DIR": tempfile.mkdtemp(prefix="lens-spool-")})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def median(values):
    return statistics.median(values)
