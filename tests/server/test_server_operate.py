"""Operating Lens: probes, start-up against a database that is down, delete and retention.

The database outages here are real: the server reaches PostgreSQL through a TCP
relay (:class:`Relay`) that the test opens late or closes, so the server sees
refused and cut connections exactly as during a PostgreSQL restart.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from helpers.server import PG_DSN_ENV, SRC, LensServer, create_pg_database, drop_pg_database, free_port
from helpers.server_data import metrics_body, sql_scalar

needs_pg = pytest.mark.skipif(not os.environ.get(PG_DSN_ENV), reason=f"{PG_DSN_ENV} is not set")


class Relay:
    """A TCP relay from a local port to PostgreSQL, which the test can open and close."""

    def __init__(self, target, port=None):
        self.target = target
        self.port = port or free_port()
        self.listener = None
        self.conns = []
        self.lock = threading.Lock()

    def open(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return self

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        """Refuse new connections and cut every open one (the database 'goes down')."""
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(), freeing the port
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _pg_target():
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(os.environ[PG_DSN_ENV])
    return (d.get("host") or "127.0.0.1", int(d.get("port") or 5432))


def _via(url: str, port: int) -> str:
    """``url`` (postgresql://user@host:port/db) through the relay on ``port``."""
    head, _, rest = url.partition("@")
    return f"{head}@127.0.0.1:{port}/{rest.split('/', 1)[1]}"


@pytest.fixture
def pg_url():
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def _serve(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    env.pop("PRIMUS_LENS_API_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.server", "--port", str(free_port()),
                           *args], env=env, capture_output=True, text=True, timeout=timeout)


# ---- /livez and /readyz -------------------------------------------------------------------

def test_livez_and_readyz_answer_ok_on_a_healthy_server(lens_server):
    live = requests.get(lens_server.url + "/livez", timeout=10)
    ready = requests.get(lens_server.url + "/readyz", timeout=10)
    assert live.status_code == 200 and live.json()["status"] == "ok"
    assert ready.status_code == 200 and ready.json()["database"].startswith(lens_server.db_kind)


def test_probes_are_open_when_the_api_needs_a_token(lens_server_factory):
    srv = lens_server_factory(token="s3cret")
    for path in ("/livez", "/readyz"):
        assert requests.get(srv.url + path, timeout=10).status_code == 200, path


@needs_pg
def test_database_down_makes_readyz_503_but_livez_stays_200(tmp_path, pg_url):
    relay = Relay(_pg_target()).open()
    srv = LensServer(_via(pg_url, relay.port), tmp_path / "server.log").start()
    try:
        assert srv.post("/wandb/metrics", metrics_body("wl-probe", [("loss", 1, 1.0)])).status_code == 200
        relay.close()  # PostgreSQL restarts
        ready = requests.get(srv.url + "/readyz", timeout=30)
        assert ready.status_code == 503, ready.text
        assert ready.json()["error"] == "database_unavailable"
        assert ready.headers["content-type"] == "application/json"
        # The process is fine: liveness must not restart it for a database outage.
        assert requests.get(srv.url + "/livez", timeout=10).status_code == 200
        # Ingest and reads say so too: 503 database_unavailable with Retry-After (the exporter
        # retries, then spools), not the 500 of a "real server fault", and no traceback logged.
        for r in (srv.post("/wandb/metrics", metrics_body("wl-probe", [("loss", 9, 1.0)])),
                  srv.get("/workloads"), srv.get("/workloads/wl-probe")):
            assert r.status_code == 503 and r.json()["error"] == "database_unavailable", (r.status_code, r.text)
            assert int(r.headers["Retry-After"]) >= 1
        assert "unhandled error" not in srv.log_text()
        relay.open()  # back on the same port
        deadline = time.monotonic() + 30
        while requests.get(srv.url + "/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "readyz did not recover"
            time.sleep(0.2)
        assert srv.post("/wandb/metrics", metrics_body("wl-probe", [("loss", 2, 1.0)])).status_code == 200
    finally:
        srv.stop()
        relay.close()


# ---- start-up while the database is down --------------------------------------------------

def test_serve_against_a_closed_port_prints_one_line_and_exits_1_after_the_wait():
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    # Passwords in the query string (libpq's other place for them, names percent-encoded or not)
    # and after an empty user name are never printed either.
    proc = _serve("--db", f"postgresql://:Secret1@127.0.0.1:{port}/lens?password=TopSecret&pass%77ord=Secret2",
                  "--db-wait", "2")
    waited = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Secret" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("primus-lens serve:")]
    assert len(errors) == 1, proc.stderr
    assert "cannot reach the database" in errors[0] and f"127.0.0.1:{port}" in errors[0]
    assert "--db-wait" in errors[0]
    assert waited >= 2  # it kept retrying for the wait before giving up
    assert "retrying" in proc.stderr  # each attempt logged


@needs_pg
def test_serve_against_a_database_that_does_not_exist_fails_at_once():
    # Reachable server, wrong database name: no wait cures that.
    dsn = os.environ[PG_DSN_ENV]
    url = dsn.rsplit("/", 1)[0] + "/lens_no_such_database"
    t0 = time.monotonic()
    proc = _serve("--db", url, "--db-wait", "30")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "primus-lens serve: cannot open the database" in proc.stderr and "lens_no_such_database" in proc.stderr
    assert "retrying" not in proc.stderr
    assert time.monotonic() - t0 < 25  # did not sit out the 30 s wait


def test_serve_with_an_unusable_sqlite_path_prints_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _serve("--db", str(blocker / "sub" / "lens.db"), "--db-wait", "0")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "primus-lens serve: cannot open the database" in proc.stderr


@needs_pg
def test_serve_waits_for_a_database_that_comes_up_later(tmp_path, pg_url):
    relay = Relay(_pg_target())
    srv = LensServer(_via(pg_url, relay.port), tmp_path / "server.log", extra_args=["--db-wait", "60"])
    opened = threading.Event()

    def open_after_a_refusal():  # PostgreSQL "comes up" once serve has found it down and said so
        end = time.monotonic() + 60
        while "not reachable" not in srv.log_text() and time.monotonic() < end:
            time.sleep(0.1)
        relay.open()
        opened.set()

    threading.Thread(target=open_after_a_refusal, daemon=True).start()
    try:
        srv.start(timeout=90)  # /health answers once the relay lets it reach PostgreSQL
        assert "not reachable" in srv.log_text()
        assert srv.post("/wandb/metrics", metrics_body("wl-late", [("loss", 1, 1.0)])).status_code == 200
    finally:
        opened.wait(60)
        srv.stop()
        relay.close()


# ---- delete and retention -----------------------------------------------------------------

def _fill(srv, uid, n=300):
    """Points (enough for rollups), a run, a detection and exporter counters for ``uid``."""
    body = metrics_body(uid, [("loss", i, float(i)) for i in range(n)], exporter={"points_sent": n})
    assert srv.post("/wandb/metrics", body).status_code == 200
    assert srv.post("/wandb/run", {"workload_uid": uid, "run_id": "run-1", "event": "started",
                                   "project": "p", "pod_name": "train-pod-0"}).status_code == 200
    assert srv.post("/wandb/detection", {"workload_uid": uid, "pod_name": "train-pod-0",
                                         "detection": {"wrapper": "primus", "base": "megatron",
                                                       "method": "exact", "confidence": 1.0}}).status_code == 200


def _rows(srv, uid):
    q = {t: f"SELECT COUNT(*) FROM {t} WHERE workload_uid = ?"
         for t in ("workloads", "runs", "detections", "pods", "exporter_stats", "series")}
    out = {t: sql_scalar(srv, sql, (uid,)) for t, sql in q.items()}
    sub = "SELECT id FROM series WHERE workload_uid = ?"
    out["points"] = sql_scalar(srv, f"SELECT COUNT(*) FROM points WHERE series_id IN ({sub})", (uid,))
    out["rollups"] = sql_scalar(srv, f"SELECT COUNT(*) FROM series_rollup WHERE series_id IN ({sub})", (uid,))
    return out


def test_delete_workload_removes_everything_stored_for_it_and_nothing_else(lens_server_factory):
    srv = lens_server_factory(token="adm")
    _fill(srv, "wl-gone", n=3000)
    _fill(srv, "wl-kept")
    before = _rows(srv, "wl-gone")
    assert all(before.values()), before  # every table holds something of it
    kept = _rows(srv, "wl-kept")

    assert requests.delete(srv.api + "/workloads/wl-gone", timeout=30).status_code == 401  # needs the token
    r = requests.delete(srv.api + "/workloads/wl-gone", headers=srv.headers(), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"]["points"] == 3000
    assert r.json()["deleted"] == before
    assert not any(_rows(srv, "wl-gone").values())
    assert _rows(srv, "wl-kept") == kept
    assert srv.get("/workloads/wl-gone").status_code == 404
    assert [w["workload_uid"] for w in srv.get("/workloads").json()["workloads"]] == ["wl-kept"]

    again = requests.delete(srv.api + "/workloads/wl-gone", headers=srv.headers(), timeout=30)
    assert again.status_code == 404 and again.json()["error"] == "workload_not_found"

    # The same workload can report again, from scratch (no stale cached state).
    _fill(srv, "wl-gone", n=500)
    d = srv.get("/workloads/wl-gone/metrics/data", metrics="loss", max_points=100).json()
    assert d["data"][0]["value"] == 0.0 and d["data"][-1]["value"] == 499.0
    assert srv.get("/workloads/wl-gone").json()["points"] == 500


def _age(srv, uid, days):
    """Pretend ``uid`` was last updated ``days`` ago (what time passing would do)."""
    ms = (time.time() - days * 86400) * 1000
    if srv.db_kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(srv.sqlite_path)
        with conn:
            conn.execute("UPDATE workloads SET last_update = ? WHERE workload_uid = ?", (ms, uid))
        conn.close()
    else:
        import psycopg

        with psycopg.connect(srv.db_url) as conn:
            conn.execute("UPDATE workloads SET last_update = %s WHERE workload_uid = %s", (ms, uid))


def test_retention_deletes_workloads_older_than_the_limit_at_start(lens_server_factory, lens_db_url_factory):
    url = lens_db_url_factory()
    srv = lens_server_factory(db_url=url)
    _fill(srv, "wl-old")
    _fill(srv, "wl-new")
    _age(srv, "wl-old", 10)
    _age(srv, "wl-new", 2)
    srv.stop()
    srv = lens_server_factory(db_url=url, extra_args=["--retention-days", "7"])
    deadline = time.monotonic() + 30
    while srv.get("/workloads/wl-old").status_code != 404:
        assert time.monotonic() < deadline, "retention did not delete the old workload"
        time.sleep(0.2)
    assert not any(_rows(srv, "wl-old").values())
    assert srv.get("/workloads/wl-new").status_code == 200
    # The sweep commits the delete, then counts it, then logs it: the line is waited for.
    while "retention: deleted 1 workloads" not in srv.log_text():
        assert time.monotonic() < deadline, srv.log_text()[-2000:]
        time.sleep(0.2)
    storage = srv.get("/health").json()["storage"]
    assert storage["retention_deleted_workloads"] == 1 and storage["retention_errors"] == 0
    assert storage["retention_sweeps"] >= 1


@pytest.mark.parametrize("option,value", [("--retention-days", "0"), ("--retention-days", "nan"),
                                          ("--retention-days", "inf"), ("--db-wait", "nan")])
def test_a_number_option_out_of_range_is_refused_at_start(option, value):
    # nan passed the "<= 0" check, and the sweep it started then deleted nothing, silently.
    proc = _serve("--db", "sqlite:///:memory:", option, value)
    assert proc.returncode == 2 and option in proc.stderr, proc.stderr


# ---- Prometheus /metrics ------------------------------------------------------------------

def _scrape(srv):
    from prometheus_client.parser import text_string_to_metric_families

    r = requests.get(srv.url + "/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _requests(m, route, method="POST", status="200"):
    return m.get(("lens_http_requests_total", (("method", method), ("route", route), ("status", status))), 0)


def test_metrics_count_requests_by_route_and_the_storage_counters(lens_server_factory):
    srv = lens_server_factory(token="t")
    for i in range(7):
        assert srv.post("/wandb/metrics", metrics_body("wl-prom", [("loss", i * 10 + j, 1.0) for j in range(10)])
                        ).status_code == 200
    assert requests.post(srv.api + "/wandb/metrics", json={}, timeout=10).status_code == 401
    for _ in range(3):
        assert srv.get("/workloads/wl-prom").status_code == 200
    m = _scrape(srv)
    assert _requests(m, "/api/v1/wandb/metrics") == 7
    assert _requests(m, "/api/v1/workloads/{uid}", "GET") == 3  # the template, not the workload id
    assert _requests(m, "other", "POST", "401") == 1
    count = m[("lens_http_request_duration_seconds_count",
               (("method", "POST"), ("route", "/api/v1/wandb/metrics")))]
    assert count == 7
    assert m[("lens_storage_points_inserted_total", ())] == 70
    assert m[("lens_storage_ingest_transactions_total", ())] == 7
    assert not any("wl-prom" in str(k) for k in m)


def test_metrics_add_up_every_worker(lens_server_factory):
    from test_server_ops import _all_workers_serving, _post_on_fresh_connections, _wait_for_transactions

    srv = lens_server_factory(extra_args=["--workers", "2"])
    _all_workers_serving(srv)
    n = 16
    _post_on_fresh_connections(srv, "wl-w", n)
    workers = _wait_for_transactions(srv, n)["workers"]
    # Both workers did part of the work, so one process's own count would be short.
    assert len(workers) == 2 and all(w["storage"]["ingest_transactions"] > 0 for w in workers), workers
    for _ in range(6):  # whichever worker answers the scrape, it reports both workers' requests
        m = _scrape(srv)
        assert _requests(m, "/api/v1/wandb/metrics") == n
        assert m[("lens_storage_points_inserted_total", ())] == 2 * n


@pytest.mark.parametrize("lens_db_kind", ["sqlite"], indirect=True)
def test_sqlite_never_hands_out_the_id_of_a_deleted_series_again(lens_server_factory):
    # Other --workers processes cache rollup tails by series id: a reused id could
    # make a new series' rollups start from a deleted series' tail.
    srv = lens_server_factory(token="t")
    _fill(srv, "wl-a", n=10)
    top = sql_scalar(srv, "SELECT MAX(id) FROM series")
    for uid in ("wl-a", "wl-b", "wl-c"):
        if uid != "wl-a":
            _fill(srv, uid, n=10)
        assert requests.delete(srv.api + f"/workloads/{uid}", headers=srv.headers(), timeout=30).status_code == 200
        _fill(srv, "wl-next-" + uid, n=10)
        new_id = sql_scalar(srv, "SELECT MIN(id) FROM series WHERE workload_uid = ?", ("wl-next-" + uid,))
        assert new_id > top, (new_id, top)
        top = sql_scalar(srv, "SELECT MAX(id) FROM series")
        assert requests.delete(srv.api + f"/workloads/wl-next-{uid}", headers=srv.headers(), timeout=30
                               ).status_code == 200
    # One tombstone row at most, invisible to every listing.
    assert sql_scalar(srv, "SELECT COUNT(*) FROM series") == 1
    assert srv.get("/workloads").json()["workloads"] == []
    assert srv.get("/health").status_code == 200


def test_retention_sweeps_again_every_interval(tmp_path):
    # The hourly loop, with a short interval, on a real SQLite store.
    from primus_lens_wandb_exporter.server import ops, validate
    from primus_lens_wandb_exporter.server.storage import open_store

    store = open_store(f"sqlite:///{tmp_path}/lens.db")
    try:
        store.ingest(runs=[validate.run({"workload_uid": "wl-1", "run_id": "r", "event": "started"})])
        retention = ops.Retention(store, days=1, interval=0.2)
        retention.start()
        time.sleep(0.5)
        assert store.workload_exists("wl-1")  # fresh: kept
        with store.write_tx() as cur:  # a day and a bit passes for wl-1
            cur.execute("UPDATE workloads SET last_update = ?", ((time.time() - 90000) * 1000,))
        deadline = time.monotonic() + 10
        while store.workload_exists("wl-1"):
            assert time.monotonic() < deadline, "a later sweep did not delete it"
            time.sleep(0.1)
        retention.stop()
        # the first sweep kept it, a later one deleted it
        assert store.stats()["retention_sweeps"] >= 2 and store.stats()["retention_deleted_workloads"] == 1
    finally:
        store.close()


# ---- rollup tails kept in memory ------------------------------------------------------------

def _tail_reads(srv):
    return srv.get("/health").json()["storage"].get("rollup_tail_reads", 0)


def test_rollup_tails_bounds_the_tails_kept_and_health_counts_the_reads_back(lens_server_factory):
    """Three rolled-up series appended in turn: one tail kept (--rollup-tails 1) means every append
    reads its tail back from the database; the default keeps all three. Answers are the same."""
    servers = {"one": lens_server_factory(extra_args=["--rollup-tails", "1"]), "default": lens_server_factory()}
    for srv in servers.values():
        for name in ("a", "b", "c"):  # past the rollup threshold (256 points): each series has a rollup
            assert srv.post("/wandb/metrics", metrics_body("tails", [(name, r, r / 7) for r in range(300)])).ok
    reads = {k: _tail_reads(srv) for k, srv in servers.items()}
    for lo in range(300, 350, 10):
        for srv in servers.values():
            for name in ("a", "b", "c"):
                body = metrics_body("tails", [(name, r, r / 7) for r in range(lo, lo + 10)])
                assert srv.post("/wandb/metrics", body).ok
    assert _tail_reads(servers["one"]) - reads["one"] >= 14 and _tail_reads(servers["default"]) == reads["default"]
    answers = [[{k: v for k, v in p.items() if k != "timestamp"}  # each server's own sending time
                for p in srv.get("/workloads/tails/metrics/data", data_source="wandb", max_points=40).json()["data"]]
               for srv in servers.values()]
    assert answers[0] == answers[1] and len(answers[0]) > 0


def test_rollup_tails_must_not_be_negative():
    proc = _serve("--db", "sqlite:///:memory:", "--rollup-tails", "-1")
    assert proc.returncode == 2 and "--rollup-tails" in proc.stderr
