"""A group commit folds its detection and run reports per workload and per run (each
run read and written once; every detection inserted in one statement, the workload's
best compared once).  The stored rows must be exactly what storing the reports one
at a time gives: random report sequences, one store fed report by report, another
fed everything as one group, on both databases.
"""

from __future__ import annotations

import random

import pytest
from helpers.server import LENS_DB_KINDS, create_pg_database, drop_pg_database

from primus_lens_wandb_exporter.server.storage import open_store

UIDS = ["wl-a", "wl-b"]
RUNS = ["run-1", "run-2"]


@pytest.fixture(params=LENS_DB_KINDS)
def two_stores(request, tmp_path):
    urls = []
    if request.param == "postgres":
        urls = [create_pg_database(), create_pg_database()]
    else:
        urls = [f"sqlite:///{tmp_path}/one.db", f"sqlite:///{tmp_path}/group.db"]
    stores = [open_store(u) for u in urls]
    yield stores
    for s in stores:
        s.close()
    if request.param == "postgres":
        for u in urls:
            drop_pg_database(u)


def _detection(rnd, t):
    # Few distinct ranks, so that equal-ranked reports (the later one wins) are common.
    det = {"method": rnd.choice(["exact", "exact", "heuristic"]), "confidence": rnd.choice([None, 1.0, 1.0])}
    for layer in ("wrapper", "base"):
        if rnd.random() < 0.8:
            det[layer] = rnd.choice(["lightning", "deepspeed", "megatron", "pytorch"])
    return {"workload_uid": rnd.choice(UIDS), "source": "wandb", "type": "training", "version": "1",
            "pod_name": f"pod-{rnd.randint(0, 3)}", "rank": rnd.randint(0, 3), "run_id": rnd.choice(RUNS),
            "detection": det, "evidence": {"k": rnd.randint(0, 9)}, "hints": None,
            "timestamp_ms": rnd.choice([None, 1.7e12 + t // 20, 1.7e12 + t // 20])}


def _run(rnd, t):
    r = {"workload_uid": rnd.choice(UIDS), "run_id": rnd.choice(RUNS), "timestamp_ms": 1.7e12 + t}
    if rnd.random() < 0.5:
        r["config"] = {rnd.choice("abc"): rnd.randint(0, 9)}
    if rnd.random() < 0.5:
        r["summary"] = {rnd.choice("xyz"): rnd.random()}
    if rnd.random() < 0.2:
        r["summary_removed"] = [rnd.choice("xyz")]
    if rnd.random() < 0.3:
        r["tags"] = [rnd.choice(["t1", "t2"])]
    for f, choices in (("project", ["p", "q"]), ("name", ["n1", "n2"]), ("group", ["g", None]),
                       ("status", [None, "running", "finished", "crashed"]), ("rank", [0, 1, None]),
                       ("event", [None, "started", "finished"]), ("exit_code", [None, 0, 1])):
        if rnd.random() < 0.4:
            r[f] = rnd.choice(choices)
    return r


def _state(store):
    with store.read_cursor() as cur:
        runs = cur.execute("SELECT * FROM runs ORDER BY workload_uid, run_id").fetchall()
        wls = cur.execute("SELECT workload_uid, det_wrapper, det_base, det_method, det_confidence, det_reported_at, "
                          "det_evidence, det_hints FROM workloads ORDER BY workload_uid").fetchall()
        dets = cur.execute("SELECT workload_uid, source, type, version, pod_name, rank, run_id, wrapper, base, "
                           "method, confidence, evidence, hints FROM detections "
                           "ORDER BY workload_uid, pod_name, rank, run_id, method, evidence").fetchall()
    return [tuple(r) for r in runs], [tuple(r) for r in wls], sorted(map(tuple, dets), key=repr)


@pytest.mark.parametrize("seed", range(3))
def test_a_group_of_reports_stores_what_one_by_one_stores(two_stores, seed):
    one, group = two_stores
    rnd = random.Random(seed)
    # The same "now" for both: a report without a timestamp takes the server's time.
    reports = [("d", _detection(rnd, t)) if rnd.random() < 0.5 else ("r", _run(rnd, t)) for t in range(120)]
    parts = []
    for kind, rep in reports:
        part = ([], [rep], []) if kind == "d" else ([], [], [rep])
        parts.append(part)
    # Report by report, each its own transaction, against a store in the same state.
    for i in range(0, len(parts), 40):
        chunk = parts[i:i + 40]
        for p in chunk:
            one.ingest(*p)
        group.ingest_many(chunk)
        a, b = _state(one), _state(group)
        # A report without a timestamp takes the transaction's time: compare the rest.
        assert _without_now(a) == _without_now(b)


def _without_now(state):
    runs, wls, dets = state
    # Column 16 of runs is updated_at (the last report's time, or the server's when it had none).
    return [r[:16] for r in runs], [w[:5] + w[6:] for w in wls], dets
