"""Group commit (server/ingest.py, Store.ingest_many): concurrent ingest requests share
one transaction, each is answered only after its points are committed, each gets its
own counts, and one request's failure fails only that request."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import requests
from helpers.server import REPO_ROOT
from helpers.server_data import metrics_body, sql_scalar

from primus_lens_wandb_exporter.server.storage import open_store
from primus_lens_wandb_exporter.server.storage.model import IngestResult, SeriesBatch


def _post_all(srv, bodies_per_thread, path="/wandb/metrics"):
    """POST each thread's bodies in order, all threads released at once; the answers per thread."""
    barrier = threading.Barrier(len(bodies_per_thread))
    answers = [[] for _ in bodies_per_thread]

    def run(i):
        s = requests.Session()
        barrier.wait()
        for body in bodies_per_thread[i]:
            r = s.post(srv.api + path, json=body, timeout=60)
            answers[i].append((r.status_code, r.json()))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies_per_thread))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return answers


def test_concurrent_requests_share_transactions_and_each_gets_its_own_counts(srv, uid):
    before = srv.get("/health").json()["storage"]["ingest_transactions"]
    threads, rounds = 32, 6
    # Two threads per rank send the same rows (values differ): of each pair of points one
    # is new, the other an update, whichever request the group puts first.  Every third
    # thread also sends one invalid body, which must fail alone.
    bodies = []
    for i in range(threads):
        mine = []
        for r in range(rounds):
            mine.append(metrics_body(uid, [(f"m{k}", r, float(i * 100 + k)) for k in range(10)], rank=i // 2))
            if i % 3 == 0 and r == 2:
                mine.append({"workload_uid": uid, "metrics": [{"name": "m0", "value": 1.0, "step": 0}],
                             "rank": "not-a-rank"})
        bodies.append(mine)
    answers = _post_all(srv, bodies)
    ok = [a for thread in answers for st, a in thread if st == 200]
    bad = [(st, a) for thread in answers for st, a in thread if st != 200]
    assert len(ok) == threads * rounds and all(a["count"] == 10 for a in ok)
    assert len(bad) == len(range(0, threads, 3)) and all(st == 400 and a["field"] == "rank" for st, a in bad)
    unique = (threads // 2) * rounds * 10
    # Each point was counted new by exactly one request: the counts add up to the rows.
    assert sum(a["inserted"] for a in ok) == unique
    assert sql_scalar(srv, "SELECT COUNT(*) FROM training_performance WHERE workload_uid = ?", (uid,)) == unique
    src = srv.get(f"/workloads/{uid}/metrics/sources").json()["data_sources"]
    assert src[0]["count"] == unique
    # Grouped: fewer transactions than requests (one per request without group commit).
    after = srv.get("/health").json()["storage"]["ingest_transactions"]
    assert after - before < threads * rounds, (before, after)


def test_batch_detection_and_run_are_group_committed_too(srv, uid):
    threads = 16
    bodies = [[{"detection": {"workload_uid": uid, "pod_name": f"pod-{i}", "rank": i,
                              "detection": {"wrapper": "primus", "base": "megatron", "method": "exact"}},
                "run": {"workload_uid": uid, "run_id": f"run-{i}", "rank": i, "event": "started", "name": f"n{i}"},
                "metrics": metrics_body(uid, [("loss", s, float(s)) for s in range(5)], rank=i, run_id=f"run-{i}")}]
              for i in range(threads)]
    answers = _post_all(srv, bodies, "/wandb/batch")
    for thread in answers:
        (status, a), = thread
        assert status == 200, a
        assert a["results"]["metrics"]["inserted"] == 5 and a["results"]["run"]["count"] == 1
    w = srv.get(f"/workloads/{uid}").json()
    assert len(w["runs"]) == threads
    assert sql_scalar(srv, "SELECT COUNT(*) FROM training_performance WHERE workload_uid = ?", (uid,)) == threads * 5


def _batch(uid, rank, rows, value=1.0):
    b = SeriesBatch(uid, "wandb", "run-1", rank, "pod-0", "", "")
    b.series["loss"] = {r: (value, 1_700_000_000_000.0 + r, r) for r in rows}
    return b


def test_one_request_failing_in_the_database_does_not_fail_the_others(lens_db_url_factory):
    # A rank the database cannot bind (past BIGINT; the validator would refuse it, so
    # this goes to the store directly): the shared transaction fails, and each request
    # is then stored alone.
    store = open_store(lens_db_url_factory())
    try:
        good1 = ([_batch("wl-iso", 0, range(0, 10))], [], [])
        bad = ([_batch("wl-iso", 2**70, range(0, 10))], [], [])
        good2 = ([_batch("wl-iso", 1, range(0, 10)), _batch("wl-iso", 0, range(5, 15), 2.0)], [],
                 [{"workload_uid": "wl-iso", "run_id": "run-1", "event": "started"}])
        res = store.ingest_many([good1, bad, good2])
        assert isinstance(res[0], IngestResult) and (res[0].count, res[0].inserted) == (10, 10)
        assert isinstance(res[1], Exception)
        # good2: rank 1 all new; rank 0 rows 5..9 were good1's (updated), 10..14 new.
        assert isinstance(res[2], IngestResult) and (res[2].count, res[2].inserted, res[2].runs) == (20, 15, 1)
        assert store.stats()["group_commit_fallbacks"] == 1
        assert sorted(store.sources("wl-iso")) == [("wandb", 25)]
    finally:
        store.close()


def test_group_counts_equal_one_by_one_counts(lens_db_url_factory):
    # The same requests stored as one group and one by one: the same answers and rows.
    reqs = [([_batch("wl-eq", 0, range(0, 10))], [], []),
            ([_batch("wl-eq", 0, range(5, 20)), _batch("wl-eq", 0, range(18, 25), 3.0)], [], []),
            ([_batch("wl-eq", 1, range(0, 3))], [], []),
            ([_batch("wl-eq", 0, range(0, 30))], [], [])]
    grouped = open_store(lens_db_url_factory())
    single = open_store(lens_db_url_factory())
    try:
        grouped.ingest(metrics=[_batch("wl-eq", 0, range(25, 28))])  # some rows stored before
        single.ingest(metrics=[_batch("wl-eq", 0, range(25, 28))])
        g = grouped.ingest_many(reqs)
        s = [single.ingest(*r) for r in reqs]
        assert [(x.count, x.inserted) for x in g] == [(x.count, x.inserted) for x in s] == \
            [(10, 10), (20, 15), (3, 3), (30, 2)]
        assert grouped.data("wl-eq", "wandb", None, None, None, None, None, 1000, None, None, "row") == \
            single.data("wl-eq", "wandb", None, None, None, None, None, 1000, None, None, "row")
    finally:
        grouped.close()
        single.close()


class _Rank(threading.Thread):
    """Posts 10-point bodies of one rank until the server stops answering; records acknowledged rows."""

    def __init__(self, srv, uid, rank, acked_total):
        super().__init__(daemon=True)
        self.srv, self.uid, self.rank, self.acked_total = srv, uid, rank, acked_total
        self.acked = []

    def run(self):
        s = requests.Session()
        for row in range(100_000):
            body = metrics_body(self.uid, [(f"m{k}", row, float(row)) for k in range(10)], rank=self.rank)
            try:
                r = s.post(self.srv.api + "/wandb/metrics", json=body, timeout=30)
            except requests.RequestException:
                return
            if r.status_code == 200:
                self.acked.append(row)
                self.acked_total.append(1)


def test_kill_9_after_200_acknowledged_loses_nothing_acknowledged(lens_server):
    uid = "wl-group-kill"
    acked_total: list = []
    ranks = [_Rank(lens_server, uid, i, acked_total) for i in range(16)]
    for t in ranks:
        t.start()
    deadline = time.monotonic() + 120
    while len(acked_total) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(acked_total) >= 200, lens_server.log_text()[-2000:]
    lens_server.kill()  # SIGKILL with requests of every rank in flight
    for t in ranks:
        t.join(60)
    lens_server.start()
    for t in ranks:
        for k in range(10):
            n = sql_scalar(lens_server, "SELECT COUNT(*) FROM training_performance WHERE workload_uid = ? "
                                        "AND rank = ? AND metric_name = ?", (uid, t.rank, f"m{k}"))
            # Sequential per rank: every acknowledged row is stored, at most one more (in flight at the kill).
            assert len(t.acked) <= n <= len(t.acked) + 1, (t.rank, k, n, len(t.acked))


def test_bench_fleet_quick_smoke(tmp_path):
    # The fleet benchmark runs end to end and verifies its own count-back (no timing asserted).
    out = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_fleet.py"), "--quick"],
                         capture_output=True, text=True, timeout=180, cwd=str(REPO_ROOT))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK nothing lost" in out.stdout and "requests per server CPU-second" in out.stdout
