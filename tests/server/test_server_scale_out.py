"""Scale out: N ``primus-lens serve`` replicas over ONE PostgreSQL database.

Replicas share nothing but the database (each process keeps only caches that it
checks against it: series ids, and rollup tails tagged with the series' ``rev``).
Clients (several ranks of two runs of one workload, the same metric names in
every series) ingest concurrently, each sending its consecutive requests to
different replicas, so every series is written by every replica in turn; one
client re-sends batches (a retry after a lost answer) to another replica while
the original's replica may still be writing them.  Then every replica must give
exact counts and the same answers, raw and downsampled (rollup-based), and these
must equal the answers of the same requests sent through one server into a
fresh database.  A second phase writes one series alternately through the
replicas and reads each batch back through another replica right after its
acknowledgement (nothing cached per process may go stale).
"""

from __future__ import annotations

import json
import math
import os
import threading

import pytest
import requests
from helpers.server import PG_DSN_ENV, LensServer, create_pg_database, drop_pg_database
from helpers.server_data import sql_scalar

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not os.environ.get(PG_DSN_ENV),
                                 reason=f"scale-out needs PostgreSQL: set {PG_DSN_ENV} to a server where the "
                                        "tests may create databases")]

UID = "scale-wl"
RUNS = ("run-a", "run-b")
RANKS = (0, 1, 2)
METRICS = ("loss", "lr", "grad_norm")  # the same names in every run and rank
BATCHES, ROWS = 12, 100                # 1,200 rows per series: rollups (> 256 points) over 18 base blocks
T0 = 1_760_000_000.0                   # fixed client timestamps: answers must not depend on arrival order
# Downsampled answers: 4 (one bucket), 40 and 100 are served from rollups for these
# series (the range spans more than max_points/4 base blocks of 64 rows); 2000 from raw points.
MAX_POINTS = (4, 40, 100, 2000)


def _value(run, rank, name, row):
    if name == "loss" and rank == 1 and row in (333, 777):
        return "NaN"  # non-finite points are kept in every downsampled answer
    k = RUNS.index(run) * 7 + rank * 3 + METRICS.index(name)
    return round(math.sin(row / (17.0 + k)) * (k + 1) + row * 1e-3, 9)


def _metrics_body(run, rank, rows, exporter=None):
    body = {"source": "wandb", "workload_uid": UID, "pod_name": f"{UID}-pod-{rank}", "run_id": run, "rank": rank,
            "timestamp": T0, "metrics": [{"name": n, "step": r, "value": _value(run, rank, n, r),
                                          "timestamp": T0 + r} for r in rows for n in METRICS]}
    if exporter is not None:
        body["exporter"] = exporter
    return body


def _detection(run, rank):
    # Every report ranks differently (method, layers, confidence), so the best one does
    # not depend on the order the replicas commit them in.
    exact = run == RUNS[0] and rank == 0
    return {"source": "wandb", "type": "framework_detection_raw", "workload_uid": UID, "pod_name": f"{UID}-pod-{rank}",
            "rank": rank, "run_id": run, "timestamp": T0 + RUNS.index(run) * 10 + rank,
            "evidence": {"reported_by": f"{run}/{rank}"}, "hints": {"wrapper_frameworks": ["lightning"]},
            "detection": {"wrapper": "lightning", "base": "pytorch", "method": "exact" if exact else "heuristic",
                          "confidence": 0.95 if exact else round(0.1 + 0.1 * (RUNS.index(run) * 3 + rank), 2)}}


def _run_event(run, event, **fields):
    return {"source": "wandb", "workload_uid": UID, "pod_name": f"{UID}-pod-0", "run_id": run, "event": event,
            "timestamp": T0 + {"started": 0, "config": 1, "summary": 2, "finished": 3}[event], **fields}


def _client_requests(run, rank):
    """The requests of one rank, in its order: (path, body, resend_to_another_replica)."""
    out = []
    for b in range(BATCHES):
        rows = range(b * ROWS, (b + 1) * ROWS)
        last = b == BATCHES - 1
        exporter = {"replayed_points": BATCHES * ROWS * len(METRICS), "spooled_points": 0} if last else None
        metrics = _metrics_body(run, rank, rows, exporter)
        if b == 0:
            body = {"metrics": [metrics], "detection": _detection(run, rank)}
            if rank == 0:
                body["run"] = _run_event(run, "started", project="scale", name=run, tags=["scale-out"],
                                         mode="offline", config={"lr": 1e-3, "layers": 4})
            out.append(("/wandb/batch", body, False))
        else:
            # Every 4th batch is retried on another replica, as after an answer lost on the way back.
            out.append(("/wandb/metrics", metrics, b % 4 == 1))
        if rank == 1 and b == 3:
            # Another rank merges config into the same run while rank 0 reports it (its time is the
            # run's start, so the run's started_at is the same whichever arrives first).
            out.append(("/wandb/run", {**_run_event(run, "config", config={"seen_by_rank_1": True}),
                                       "pod_name": f"{UID}-pod-1", "timestamp": T0}, False))
        if rank == 0 and b == BATCHES // 2:
            out.append(("/wandb/run", _run_event(run, "summary", summary={"half": True}), False))
    if rank == 0:
        out.append(("/wandb/run", _run_event(run, "summary", summary={"loss": _value(run, 0, "loss", BATCHES * ROWS - 1)}),
                    False))
        out.append(("/wandb/run", _run_event(run, "finished", exit_code=0), False))
    return out


def _post(session, server, path, body):
    r = session.post(server.api + path, json=body, timeout=120)
    assert r.status_code == 200, f"{server.url}{path} -> {r.status_code} {r.text[:500]}"
    return r.json()


def _ingest(replicas):
    """Every rank of every run in its own thread, request i of client c through replica (c + i) % N;
    plus one thread re-sending run-a/rank-0's metrics batches through other replicas at the same time."""
    n = len(replicas)
    errors = []
    inserted = []

    def client(c, reqs):
        try:
            with requests.Session() as s:
                for i, (path, body, resend) in enumerate(reqs):
                    res = _post(s, replicas[(c + i) % n], path, body)
                    inserted.append(res.get("inserted", (res.get("results", {}).get("metrics") or {}).get("inserted", 0)))
                    if resend:
                        _post(s, replicas[(c + i + 1) % n], path, body)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    plans = [_client_requests(run, rank) for run in RUNS for rank in RANKS]
    dup = [(p, b, False) for p, b, _ in plans[0] if p == "/wandb/metrics"]
    threads = [threading.Thread(target=client, args=(c, reqs)) for c, reqs in enumerate(plans)]
    threads.append(threading.Thread(target=client, args=(len(plans) + 1, dup)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    return sum(inserted)


def _get(server, path, **params):
    r = requests.get(server.api + path, params=params, timeout=120)
    assert r.status_code == 200, f"{server.url}{path} {params} -> {r.status_code} {r.text[:500]}"
    return r.json()


def _answers(server):
    """Every answer compared, keyed by what was asked."""
    out = {"available": _get(server, f"/workloads/{UID}/metrics/available", data_source="wandb"),
           "sources": _get(server, f"/workloads/{UID}/metrics/sources"),
           "workload": _get(server, f"/workloads/{UID}"),
           "list": [w for w in _get(server, "/workloads")["workloads"] if w["workload_uid"] == UID],
           "raw": _get(server, f"/workloads/{UID}/metrics/data", data_source="wandb")}
    for mp in MAX_POINTS:
        out[f"max_points={mp}"] = _get(server, f"/workloads/{UID}/metrics/data", data_source="wandb", max_points=mp)
        out[f"max_points={mp},x=row,rank=1,run=b"] = _get(
            server, f"/workloads/{UID}/metrics/data", data_source="wandb", max_points=mp, x="row", rank="1",
            run_id=RUNS[1], metrics="loss,lr")
    # A time window cut inside rollup blocks (exact edges from raw points).
    out["max_points=40,start,end"] = _get(server, f"/workloads/{UID}/metrics/data", data_source="wandb",
                                          max_points=40, start=int((T0 + 150) * 1000), end=int((T0 + 1010) * 1000))
    return out


def _without_server_clock(answers):
    """The answers less what the server stamps with its own clock at arrival."""
    a = json.loads(json.dumps(answers))
    for w in [a["workload"], *a["list"]]:
        w.pop("first_seen", None)
        w.pop("last_update", None)
    for e in a["workload"]["exporters"]:
        e.pop("reported_at")
    return a


def _expected_points():
    return {(run, rank, n, r): _value(run, rank, n, r)
            for run in RUNS for rank in RANKS for n in METRICS for r in range(BATCHES * ROWS)}


def _check_exact(server, answers, inserted):
    expected = _expected_points()
    total = len(expected)
    per_series = BATCHES * ROWS
    assert inserted == total, f"the replicas reported {inserted} points inserted for {total} distinct points"
    assert {m["name"]: m["count"] for m in answers["available"]["metrics"]} == \
        {n: per_series * len(RUNS) * len(RANKS) for n in METRICS}
    assert answers["workload"]["points"] == total and answers["list"][0]["points"] == total
    assert answers["raw"]["total_count"] == total
    got = {(p["run_id"], p["rank"], p["metric_name"], p["row"]): p["value"] for p in answers["raw"]["data"]}
    assert len(got) == len(answers["raw"]["data"]) == total and got == expected
    # The database agrees: no point twice, every series' stored count is its points.
    assert sql_scalar(server, "SELECT COUNT(*) FROM points p JOIN series s ON s.id = p.series_id "
                              "WHERE s.workload_uid = ?", (UID,)) == total
    assert sql_scalar(server, "SELECT COUNT(*) FROM series s WHERE s.workload_uid = ? AND s.count <> "
                              "(SELECT COUNT(*) FROM points p WHERE p.series_id = s.id)", (UID,)) == 0
    # The downsampled answers below come from rollups, which every series has.
    assert sql_scalar(server, "SELECT COUNT(*) FROM series WHERE workload_uid = ? AND has_rollup = 0", (UID,)) == 0
    w = answers["workload"]
    assert (w["detection"]["method"], w["detection"]["confidence"]) == ("exact", 0.95), w["detection"]
    assert w["detection"]["evidence"] == {"reported_by": "run-a/0"}
    assert w["status"] == "finished" and sorted(r["run_id"] for r in w["runs"]) == list(RUNS)
    for run in w["runs"]:
        assert run["config"] == {"lr": 1e-3, "layers": 4, "seen_by_rank_1": True} and run["status"] == "finished", run
        assert run["summary"] == {"half": True, "loss": _value(run["run_id"], 0, "loss", per_series - 1)}, run
    # One exporter process per (pod, rank): its latest report, whichever run sent it.
    assert [e["stats"]["replayed_points"] for e in w["exporters"]] == [per_series * len(METRICS)] * len(RANKS)


def _alternate_and_read_back(replicas, series_run="run-b", rank=2, batches=6):
    """One series appended to through the replicas in turn, two batches each, while the next
    replica overwrites the last rows of every batch (a rank re-sending corrected values);
    every write is read back through another replica right after its 200.

    The second append through a replica is the case its cached rollup tail must not answer:
    the series' last step is what it cached, but another replica changed the rows since.
    Returns the rows appended."""
    n = len(replicas)
    start = BATCHES * ROWS
    stored = {}
    with requests.Session() as s:
        for b in range(batches):
            rows = list(range(start + b * 70, start + (b + 1) * 70))  # 70 rows: crosses a 64-row block each time
            writer, other = replicas[(b // 2) % n], replicas[(b // 2 + 1) % n]
            body = _metrics_body(series_run, rank, rows)
            body["metrics"] = [p for p in body["metrics"] if p["name"] == "loss"]
            assert _post(s, writer, "/wandb/metrics", body)["inserted"] == len(rows)
            stored.update((p["step"], p["value"]) for p in body["metrics"])
            fix = rows[-3:]
            body["metrics"] = [{**p, "value": 1000.0 + p["step"]} for p in body["metrics"] if p["step"] in fix]
            assert _post(s, other, "/wandb/metrics", body)["inserted"] == 0
            stored.update((p["step"], p["value"]) for p in body["metrics"])
            reader = replicas[(b // 2 + 2) % n] if n > 2 else writer
            fresh = _get(reader, f"/workloads/{UID}/metrics/data", data_source="wandb", metrics="loss",
                         rank=str(rank), run_id=series_run, x="row", after_row=rows[0] - 1)
            assert [(p["row"], p["value"]) for p in fresh["data"]] == [(r, stored[r]) for r in rows], \
                f"replica {reader.url} after batch {b}"
            count = {m["name"]: m["count"] for m in
                     _get(reader, f"/workloads/{UID}/metrics/available", data_source="wandb")["metrics"]}["loss"]
            assert count == BATCHES * ROWS * len(RUNS) * len(RANKS) + (b + 1) * 70
            # The rollup these writes maintained answers the same through every replica, and holds
            # the overwritten values (each the largest of its 64-row block).
            down = [_get(r, f"/workloads/{UID}/metrics/data", data_source="wandb", metrics="loss", rank=str(rank),
                         run_id=series_run, max_points=4, after_row=start - 1) for r in replicas]
            assert all(d == down[0] for d in down[1:])
            assert max(p["value"] for p in down[0]["data"]) == 1000.0 + rows[-1], f"after batch {b}"
    return batches * 70


@pytest.fixture
def pg_databases():
    made = []

    def make():
        made.append(create_pg_database())
        return made[-1]

    yield make
    for url in made:
        drop_pg_database(url)


def _start(db_url, tmp_path, count, tag):
    servers = []
    try:
        for i in range(count):
            servers.append(LensServer(db_url, tmp_path / f"{tag}-{i}.log").start())
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_over_one_postgresql_give_exact_counts_and_the_answers_of_one_server(replicas, tmp_path,
                                                                                      pg_databases):
    pytest.importorskip("fastapi")
    shared = _start(pg_databases(), tmp_path, replicas, "replica")
    try:
        inserted = _ingest(shared)
        per_replica = [_answers(s) for s in shared]
        _check_exact(shared[0], per_replica[0], inserted)
        for i, a in enumerate(per_replica[1:], 1):
            for key in a:
                assert a[key] == per_replica[0][key], f"replica {i} differs from replica 0 on {key}"
        appended = _alternate_and_read_back(shared)
        after = [_answers(s) for s in shared]
        for i, a in enumerate(after[1:], 1):
            for key in a:
                assert a[key] == after[0][key], f"after phase 2, replica {i} differs from replica 0 on {key}"
    finally:
        for s in shared:
            s.stop()

    (single,) = _start(pg_databases(), tmp_path, 1, "single")
    try:
        assert _ingest([single]) == inserted
        one = _answers(single)
        assert _alternate_and_read_back([single]) == appended
        one_after = _answers(single)
    finally:
        single.stop()
    mine, theirs = _without_server_clock(per_replica[0]), _without_server_clock(one)
    for key in mine:
        assert mine[key] == theirs[key], f"{replicas} replicas and one server differ on {key}"
    mine, theirs = _without_server_clock(after[0]), _without_server_clock(one_after)
    for key in mine:
        assert mine[key] == theirs[key], f"after phase 2, {replicas} replicas and one server differ on {key}"


def test_run_and_detection_updates_through_replicas_at_once_lose_nothing(tmp_path, pg_databases):
    # A run's config/summary merge and the workload's best detection are read-modify-write
    # updates; through several replicas at once none may be lost (nor a worse report win).
    pytest.importorskip("fastapi")
    replicas = _start(pg_databases(), tmp_path, 2, "replica")
    errors, per_client = [], 120

    def client(k):
        try:
            with requests.Session() as s:
                for i in range(per_client):
                    _post(s, replicas[(k + i) % 2], "/wandb/run",
                          {"workload_uid": "merge", "run_id": "r", "event": "config" if i % 2 else "summary",
                           "config" if i % 2 else "summary": {f"k{k}-{i}": i}, "timestamp": T0})
                    _post(s, replicas[(k + i + 1) % 2], "/wandb/detection",
                          {"workload_uid": "merge", "pod_name": f"pod-{k}", "timestamp": T0 + i,
                           "detection": {"wrapper": "lightning", "base": "pytorch", "method": "heuristic",
                                         "confidence": (k * per_client + i) / 1000}})
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        for server in replicas:
            w = _get(server, "/workloads/merge")
            (run,) = w["runs"]
            assert len(run["config"]) + len(run["summary"]) == 4 * per_client, (len(run["config"]), len(run["summary"]))
            assert w["detection"]["confidence"] == (4 * per_client - 1) / 1000
    finally:
        for s in replicas:
            s.stop()
