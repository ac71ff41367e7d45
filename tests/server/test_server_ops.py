"""Operating the server: auth, safe binding, crash and shutdown durability."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from helpers.server import SRC, LensServer, free_port
from helpers.server_data import data, metrics_body, sql_scalar


def test_token_protects_api_but_not_health_or_docs(lens_server_factory):
    srv = lens_server_factory(token="s3cret")
    body = metrics_body("wl-auth", [("loss", 1, 1.0)])
    assert requests.post(srv.api + "/wandb/metrics", json=body, timeout=10).status_code == 401
    wrong = requests.post(srv.api + "/wandb/metrics", json=body, headers={"Authorization": "Bearer nope"},
                          timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    assert requests.get(srv.api + "/workloads", timeout=10).status_code == 401
    assert srv.post("/wandb/metrics", body).status_code == 200  # helper sends the token
    assert srv.get("/workloads/wl-auth/metrics/sources").status_code == 200
    for open_path in ("/health", "/api/docs", "/api/openapi.json"):
        assert requests.get(srv.url + open_path, timeout=10).status_code == 200, open_path


def _run_cli(*args, timeout=30):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    env.pop("PRIMUS_LENS_API_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.server", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_refuses_public_bind_without_token(tmp_path):
    r = _run_cli("--host", "0.0.0.0", "--port", str(free_port()), "--db", f"sqlite:///{tmp_path}/x.db")
    assert r.returncode == 2
    assert "--allow-insecure-bind" in r.stderr and "token" in r.stderr
    assert not (tmp_path / "x.db").exists()


def test_public_bind_allowed_with_explicit_flag(tmp_path):
    srv = LensServer(f"sqlite:///{tmp_path}/x.db", tmp_path / "log", extra_args=["--host", "0.0.0.0",
                                                                               "--allow-insecure-bind"])
    srv.start()
    try:
        assert srv.get("/health").json()["status"] == "ok"
    finally:
        srv.stop()


def test_access_log_is_json_lines(lens_server):
    import json

    lens_server.get("/health")
    lens_server.stop()
    lines = [json.loads(line) for line in lens_server.log_text().splitlines() if line.startswith("{")]
    access = [x for x in lines if x.get("event") == "access" and x["path"] == "/health"]
    assert access and access[-1]["status"] == 200 and "ms" in access[-1]


class _Sender(threading.Thread):
    """Posts batches of new points until the server stops answering; records what was acknowledged."""

    def __init__(self, srv, uid, per_batch=500):
        super().__init__(daemon=True)
        self.srv, self.uid, self.per_batch = srv, uid, per_batch
        self.acked = []
        self.errors_5xx = 0
        self.progress = threading.Event()

    def run(self):
        session = requests.Session()
        for i in range(10_000):
            steps = range(i * self.per_batch, (i + 1) * self.per_batch)
            body = metrics_body(self.uid, [("loss", s, float(s)) for s in steps])
            try:
                r = session.post(self.srv.api + "/wandb/metrics", json=body, timeout=30)
            except requests.RequestException:
                return
            if r.status_code >= 500:
                self.errors_5xx += 1
            if r.status_code == 200:
                self.acked.append(i)
                if len(self.acked) >= 5:
                    self.progress.set()


def _assert_all_acked_stored(srv, sender):
    assert sender.acked, "nothing was acknowledged before the crash"
    pts = data(srv, sender.uid, metrics="loss")["data"]
    stored = {p["iteration"] for p in pts}
    for i in sender.acked:
        missing = [s for s in range(i * sender.per_batch, (i + 1) * sender.per_batch) if s not in stored]
        assert not missing, f"acknowledged batch {i} lost {len(missing)} points after restart"
    # The summary the listings use agrees with the rows (no double counting on restart).
    count = srv.get(f"/workloads/{sender.uid}/metrics/sources").json()["data_sources"][0]["count"]
    assert count == len(stored) == sql_scalar(srv, "SELECT COUNT(*) FROM training_performance "
                                                   "WHERE workload_uid = ?", (sender.uid,))


def test_kill_9_mid_ingest_loses_no_acknowledged_point(lens_server):
    sender = _Sender(lens_server, "wl-crash")
    sender.start()
    assert sender.progress.wait(60), lens_server.log_text()[-2000:]
    lens_server.kill()  # SIGKILL while the sender is still posting
    sender.join(60)
    lens_server.start()
    _assert_all_acked_stored(lens_server, sender)
    # The series keeps working after the crash: a retry of the last batches upserts.
    last = sender.acked[-1]
    body = metrics_body("wl-crash", [("loss", s, -1.0) for s in range(last * 500, (last + 2) * 500)])
    r = lens_server.post("/wandb/metrics", body).json()
    assert r["count"] == 1000 and r["inserted"] <= 500


def test_sigterm_finishes_accepted_requests(lens_server):
    sender = _Sender(lens_server, "wl-term")
    sender.start()
    assert sender.progress.wait(60)
    lens_server.proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is the clean exit.
    assert lens_server.proc.wait(60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in lens_server.log_text()
    sender.join(60)
    assert sender.errors_5xx == 0
    lens_server.start()
    _assert_all_acked_stored(lens_server, sender)


def test_serve_registers_on_an_argparse_subparsers_object():
    import argparse

    from primus_lens_wandb_exporter.server import cli

    parser = argparse.ArgumentParser(prog="primus-lens")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--port", "9999", "--db", "sqlite:///x.db", "--token", "t"])
    assert args.func is cli.serve
    assert (args.host, args.port, args.db, args.token, args.allow_insecure_bind, args.log_level) == \
        ("127.0.0.1", 9999, "sqlite:///x.db", "t", False, "info")
    assert cli.is_loopback("127.0.0.1") and cli.is_loopback("::1") and not cli.is_loopback("0.0.0.0")


def test_two_worker_processes_keep_counts_exact(lens_server_factory):
    # Two processes writing the same series at once (with retries of each other's
    # batches): cross-process serialisation must keep inserted counts and the
    # summary exact.
    srv = lens_server_factory(extra_args=["--workers", "2"])
    results = []

    def send(offset):
        session = requests.Session()
        for i in range(8):
            lo = ((i + offset) % 8) * 100
            body = metrics_body("wl-workers", [("loss", s, float(s)) for s in range(lo, lo + 100)])
            r = session.post(srv.api + "/wandb/metrics", json=body, timeout=60)
            assert r.status_code == 200, r.text
            results.append(r.json()["inserted"])

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 800  # 32 requests, 800 distinct points, each inserted exactly once
    src = srv.get("/workloads/wl-workers/metrics/sources").json()
    assert src["data_sources"] == [{"name": "wandb", "count": 800}]
    assert sql_scalar(srv, "SELECT COUNT(*) FROM training_performance WHERE workload_uid = ?",
                      ("wl-workers",)) == 800
    srv.stop()
    assert "Application shutdown complete" in srv.log_text()


def _all_workers_serving(srv, timeout=60.0):
    # /health answers once the first worker serves; the supervisor logs when all do.
    deadline = time.monotonic() + timeout
    while "workers=2" not in srv.log_text():
        assert time.monotonic() < deadline, srv.log_text()[-2000:]
        time.sleep(0.1)


def _workers_of(srv):
    import psutil

    # The live children of the supervisor, less multiprocessing's resource tracker.
    out = []
    for p in psutil.Process(srv.proc.pid).children():
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:  # exited (a zombie until the supervisor reaps it)
            pass
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing is Linux's")
def test_workers_share_a_burst_of_connections(lens_server_factory):
    # A job's ranks connect at once and keep their connections: each worker
    # process must get its share (with one shared socket, the first process to
    # wake up accepted nearly all of them and the other sat idle).
    import http.client

    srv = lens_server_factory(extra_args=["--workers", "2"])
    _all_workers_serving(srv)
    workers = _workers_of(srv)
    assert len(workers) == 2
    conns = [http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30) for _ in range(32)]
    for c in conns:
        c.connect()
    for c in conns:  # a request on each, so every connection is accepted by now
        c.request("GET", "/health")
        assert c.getresponse().read()
    per_worker = [sum(1 for k in w.net_connections(kind="tcp") if k.laddr.port == srv.port and k.raddr)
                  for w in workers]
    for c in conns:
        c.close()
    assert sum(per_worker) == 32
    assert min(per_worker) >= 4, per_worker  # 16 +- 12 by chance fails about once in 10**6 runs


def _closes_on_one_connection(srv, requests_n):
    """Send ``requests_n`` requests over one kept-alive connection (reopened when the
    server closes it); return the 1-based numbers of the answers that closed it."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    closed = []
    for i in range(1, requests_n + 1):
        conn.request("POST", "/api/v1/wandb/metrics", body=json.dumps(metrics_body("wl-rebalance", [("loss", i, 0.5)])),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()
        if (resp.getheader("connection") or "").lower() == "close":
            closed.append(i)
    conn.close()
    return closed


def test_workers_close_each_connection_now_and_then_so_the_kernel_spreads_it_anew(lens_server_factory):
    # Which worker serves a connection is fixed when it is accepted (a hash), so a
    # job's 16 ranks can land 11/5; after every REBALANCE_EVERY requests a worker
    # closes the connection and the client's next one is spread afresh.
    from primus_lens_wandb_exporter.server.workers import REBALANCE_EVERY

    srv = lens_server_factory(extra_args=["--workers", "2"])
    _all_workers_serving(srv)
    n = 3 * REBALANCE_EVERY
    assert _closes_on_one_connection(srv, n) == [REBALANCE_EVERY, 2 * REBALANCE_EVERY, 3 * REBALANCE_EVERY]
    assert srv.get("/workloads/wl-rebalance").json()["points"] == n  # nothing lost across reconnects


def _post_on_fresh_connections(srv, uid, n):
    """``n`` two-point batches, each on a new connection (so both workers get some:
    all 16 on one worker happens about once in 30,000 runs)."""
    import http.client

    for i in range(n):
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        c.request("POST", "/api/v1/wandb/metrics", headers={"Content-Type": "application/json"},
                  body=json.dumps(metrics_body(uid, [("loss", i, 0.5), ("acc", i, 0.9)], rank=i)))
        resp = c.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()
        c.close()


def _wait_for_transactions(srv, n, timeout=30.0):
    """The /health answer once every worker's shared counters add up to ``n`` ingest
    transactions (each worker shares its counters once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        answers = [srv.get("/health").json() for _ in range(4)]
        if all(h["storage"]["ingest_transactions"] == n for h in answers) or time.monotonic() > deadline:
            return answers[-1]
        time.sleep(0.2)


def test_workers_health_adds_up_every_workers_counters(lens_server_factory):
    # Each worker has its own store and counters; /health answers from one of them
    # and must still count what every worker did.
    srv = lens_server_factory(extra_args=["--workers", "2"])
    _all_workers_serving(srv)
    workers = {p.pid for p in _workers_of(srv)}
    _post_on_fresh_connections(srv, "wl-shared", 16)
    _wait_for_transactions(srv, 16)
    for h in [srv.get("/health").json() for _ in range(8)]:
        assert h["storage"]["ingest_transactions"] == 16 and h["storage"]["points_inserted"] == 32, \
            json.dumps(h) + srv.log_text()[-3000:]
        per = {w["pid"]: w for w in h["workers"]}
        assert set(per) == workers and all(w["alive"] for w in per.values()), h
        assert sum(w["storage"]["ingest_transactions"] for w in per.values()) == 16
        assert all(w["storage"]["ingest_transactions"] > 0 for w in per.values()), "both workers took connections"


def test_a_single_process_server_keeps_connections_open(lens_server):
    assert _closes_on_one_connection(lens_server, 20) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the supervisor is Linux's")
def test_worker_restarted_and_workers_die_with_the_supervisor(lens_server_factory):
    import psutil

    srv = lens_server_factory(extra_args=["--workers", "2"])
    _all_workers_serving(srv)
    first = _workers_of(srv)
    _post_on_fresh_connections(srv, "wl-restart", 16)
    _wait_for_transactions(srv, 16)
    first[0].kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = [p for p in _workers_of(srv) if p.pid != first[0].pid]
        if len(now) == 2:
            break
        time.sleep(0.2)
    assert len(now) == 2, "the supervisor did not start a new worker"
    assert "restarting it" in srv.log_text()
    r = srv.post("/wandb/metrics", metrics_body("wl-restart", [("loss", 100, 0.5)]))
    assert r.status_code == 200
    # What the dead worker counted still counts; it is listed as not alive.
    _wait_for_transactions(srv, 17)
    deadline = time.monotonic() + 30
    while True:  # the new worker is listed once it has started serving
        h = srv.get("/health").json()
        alive = sorted(w["pid"] for w in h["workers"] if w["alive"])
        if alive == sorted(p.pid for p in now) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert alive == sorted(p.pid for p in now), h
    assert h["storage"]["ingest_transactions"] == 17, f"{json.dumps(h)} killed={first[0].pid} {srv.log_text()[-3000:]}"
    assert {w["pid"]: w["alive"] for w in h["workers"]}[first[0].pid] is False
    # A crashed supervisor (kill -9) must not leave workers holding the port.
    srv.kill()
    gone, alive = psutil.wait_procs(now, timeout=30)
    assert not alive, [p.pid for p in alive]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the supervisor is Linux's")
def test_workers_on_a_taken_port_exit_with_a_clear_message(tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        proc = subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.server", "--port", str(port),
                               "--db", str(tmp_path / "lens.db"), "--workers", "2"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(SRC)})
    finally:
        taken.close()
    assert proc.returncode == 1
    assert f"cannot bind 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


def test_workers_counters_directory_of_a_killed_supervisor_is_removed_by_the_next(tmp_path):
    # serve removes its counters directory at shutdown; after kill -9 the next
    # --workers server removes the directories of supervisors no longer running.
    from primus_lens_wandb_exporter.server import shared_stats

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"primus-lens-workers-{int(done.stdout)}-abc"
    live = tmp_path / f"primus-lens-workers-{os.getpid()}-def"
    other = tmp_path / "unrelated"
    for d in (dead, live, other):
        d.mkdir()
    new = shared_stats.new_dir(str(tmp_path))
    assert not dead.exists() and live.exists() and other.exists()
    assert os.path.basename(new).startswith(f"primus-lens-workers-{os.getpid()}-")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the supervisor is Linux's")
def test_workers_on_the_port_of_another_workers_server_exit_instead_of_sharing_it(lens_server_factory, tmp_path):
    # Every worker binds with SO_REUSEPORT; without the supervisor's exclusive
    # first bind, a second server would join the port and take half of the
    # first one's connections into its own database.
    first = lens_server_factory(extra_args=["--workers", "2"])
    _all_workers_serving(first)
    proc = subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.server", "--port", str(first.port),
                           "--db", str(tmp_path / "other.db"), "--workers", "2"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"cannot bind 127.0.0.1:{first.port}" in proc.stderr
