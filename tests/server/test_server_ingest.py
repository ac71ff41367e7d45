"""Ingest: validation names the field, upserts never duplicate, non-finite values survive."""

from __future__ import annotations

import http.client
import math
import threading

import pytest
import requests
from helpers.server_data import data, metrics_body, sql_scalar


@pytest.mark.parametrize("body, field", [
    ({"metrics": []}, "workload_uid"),
    ({"workload_uid": "", "metrics": []}, "workload_uid"),
    ({"workload_uid": 7, "metrics": []}, "workload_uid"),
    ({"workload_uid": "w", "metrics": {"name": "x"}}, "metrics"),
    ({"workload_uid": "w", "rank": -1, "metrics": []}, "rank"),
    ({"workload_uid": "w", "rank": 2**40, "metrics": []}, "rank"),
    ({"workload_uid": "w", "run_id": "a\x00b", "metrics": []}, "run_id"),
])
def test_invalid_metrics_body_is_400_naming_the_field(srv, body, field):
    r = srv.post("/wandb/metrics", body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["field"] == field
    assert field in err["message"]
    # Nothing of a rejected request is stored.
    assert srv.get("/workloads/w/metrics/sources").status_code == 404


@pytest.mark.parametrize("point, field", [
    ({"value": 1}, "metrics[1].name"),
    ({"name": "a" * 513, "value": 1}, "metrics[1].name"),
    ({"name": "a\x00b", "value": 1}, "metrics[1].name"),
    ({"name": "", "value": 1}, "metrics[1].name"),
    ({"name": "a", "value": "high"}, "metrics[1].value"),
    ({"name": "a", "value": None}, "metrics[1].value"),
    ({"name": "a", "value": True}, "metrics[1].value"),
    ({"name": "a", "value": 1, "step": -1}, "metrics[1].row"),  # a negative step needs its row
    ({"name": "a", "value": 1, "step": 1.5}, "metrics[1].row"),
    ({"name": "a", "value": 1, "step": 2**64, "row": 3}, "metrics[1].step"),
    ({"name": "a", "value": 1, "step": "7", "row": 3}, "metrics[1].step"),
    ({"name": "a", "value": 1, "row": -1}, "metrics[1].row"),
    ({"name": "a", "value": 1, "row": 2**63}, "metrics[1].row"),
    ({"name": "a", "value": 1, "row": 1.5}, "metrics[1].row"),
    ({"name": "a", "value": 1, "timestamp": "now"}, "metrics[1].timestamp"),
    ({"name": "a", "value": 1, "timestamp": -1}, "metrics[1].timestamp"),
    ("not an object", "metrics[1]"),
])
def test_a_bad_point_is_refused_alone_naming_its_field(srv, uid, point, field):
    # Was a 400 for the whole request: now the one bad point is refused and listed,
    # the good points around it are stored.
    good = {"name": "ok", "value": 2.0, "step": 4}
    r = srv.post("/wandb/metrics", {"workload_uid": uid, "metrics": [good, point, dict(good, step=5)]})
    assert r.status_code == 200, r.text
    ans = r.json()
    assert ans["count"] == ans["inserted"] == 2 and ans["rejected_count"] == 1
    [rej] = ans["rejected"]
    assert rej["index"] == 1 and rej["field"] == field and rej["error"] == "invalid_field"
    assert rej["message"].startswith(field + ": ")
    assert [p["iteration"] for p in data(srv, uid)["data"]] == [4, 5]


def test_non_json_body_is_400(srv):
    import requests

    json_ct = {"Content-Type": "application/json"}   # declared JSON (else 415), but is not
    r = requests.post(srv.api + "/wandb/metrics", data=b"{not json", headers=json_ct, timeout=10)
    assert r.status_code == 400
    assert r.json()["field"] == "body"
    r = requests.post(srv.api + "/wandb/metrics", data=b"[1, 2]", headers=json_ct, timeout=10)
    assert r.status_code == 400


def test_too_many_points_is_413(srv):
    body = metrics_body("w", [("m", i, 1.0) for i in range(100_001)])
    r = srv.post("/wandb/metrics", body)
    assert r.status_code == 413
    assert r.json()["field"] == "metrics"


def test_declared_oversized_body_is_413_before_reading(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.putrequest("POST", "/api/v1/wandb/metrics")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(65 * 1024 * 1024))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()


def test_retried_batch_never_duplicates(srv):
    body = metrics_body("wl-retry", [("loss", s, 1.0 / (s + 1)) for s in range(100)] +
                        [("acc", s, s / 100) for s in range(100)])
    first = srv.post("/wandb/metrics", body).json()
    assert first == {"message": "metrics reported successfully", "count": 200, "inserted": 200,
                     "rejected_count": 0, "rejected": [], "rows": 0}
    again = srv.post("/wandb/metrics", body).json()
    assert again["count"] == 200 and again["inserted"] == 0
    # Half overlapping, half new.
    body2 = metrics_body("wl-retry", [("loss", s, 2.0) for s in range(50, 150)])
    third = srv.post("/wandb/metrics", body2).json()
    assert third["inserted"] == 50
    src = srv.get("/workloads/wl-retry/metrics/sources").json()
    assert src["data_sources"] == [{"name": "wandb", "count": 250}]
    avail = srv.get("/workloads/wl-retry/metrics/available", data_source="wandb").json()
    assert {m["name"]: m["count"] for m in avail["metrics"]} == {"loss": 150, "acc": 100}
    assert sql_scalar(srv, "SELECT COUNT(*) FROM training_performance WHERE workload_uid = ?",
                      ("wl-retry",)) == 250
    loss = {p["iteration"]: p["value"] for p in data(srv, "wl-retry", metrics="loss")["data"]}
    assert loss[10] == pytest.approx(1 / 11) and loss[60] == 2.0 and loss[149] == 2.0


def test_duplicate_key_in_one_request_last_wins(srv):
    body = metrics_body("wl-dup", [("loss", 5, 1.0), ("loss", 5, 2.0), ("loss", 5, 3.0)])
    r = srv.post("/wandb/metrics", body).json()
    assert r["count"] == 1 and r["inserted"] == 1
    pts = data(srv, "wl-dup", metrics="loss")["data"]
    assert [(p["iteration"], p["value"]) for p in pts] == [(5, 3.0)]


def test_extreme_steps_values_and_timestamps_round_trip_exactly(srv):
    # Points proven new take the bulk path (binary COPY on PostgreSQL, an
    # executemany fed by iterators on SQLite); every field must come back bit-exact.
    pts = [("x", 0, -0.0, 0.0), ("x", 1, 5e-324, 1.0), ("x", 2, 1.7976931348623157e308, 99999999999.999),
           ("x", 3, -1.7976931348623157e308, 1e11), ("x", 4, 0.1 + 0.2, 1.7e12 + 0.5), ("x", 5, "NaN", 2.5),
           ("x", 2**62, "-Infinity", 3.0), ("x", 2**63 - 1, 123456789.123456789, 99999999999999.98)]
    r = srv.post("/wandb/metrics", metrics_body("wl-extreme", pts)).json()
    assert r["count"] == r["inserted"] == len(pts)
    got = [(p["row"], p["iteration"], p["value"], p["timestamp"])
           for p in data(srv, "wl-extreme", metrics="x")["data"]]
    # The row (from the integer step) is exact; the step is a double (2**63 - 1 rounds to 2**63).
    want = [(st, int(float(st)), v, ts if ts >= 1e11 else ts * 1000.0) for _, st, v, ts in pts]
    assert got == want  # exact float equality (SQLite stores -0.0 as 0.0, which compares equal)


@pytest.mark.parametrize("sizes", [(1,), (24, 1), (250,), (251, 25, 1), (1, 24, 25, 251, 277)])
def test_every_point_of_odd_sized_batches_is_stored(srv, sizes):
    # SQLite inserts in multi-row statements of 250, 25 and 1 rows: every split
    # of a batch into those (and series boundaries inside a statement) must store
    # each point once, with its own value.
    uid = f"wl-sizes-{'-'.join(map(str, sizes))}"
    pts = [(f"s{i}", st, st + i / 1000) for i, n in enumerate(sizes) for st in range(n)]
    r = srv.post("/wandb/metrics", metrics_body(uid, pts)).json()
    assert r["count"] == r["inserted"] == sum(sizes)
    got = {(p["metric_name"], p["iteration"]): p["value"] for p in data(srv, uid)["data"]}
    assert got == {(name, st): v for name, st, v in pts}


def test_concurrent_duplicate_batches_insert_each_point_once(srv):
    # 8 senders post overlapping batches of the same 4 series at once (each point
    # is sent by 4 of them): the summed "inserted" must equal the distinct points,
    # and the summary and the rows must agree.
    uid = "wl-concurrent-dups"
    results, errors = [], []

    def send(k):
        session = requests.Session()
        for i in range(6):
            lo = ((k // 2 + i) % 6) * 250
            pts = [(f"m{j}", s, float(s * j)) for s in range(lo, lo + 250) for j in range(4)]
            r = session.post(srv.api + "/wandb/metrics", json=metrics_body(uid, pts), timeout=120)
            if r.status_code != 200:
                errors.append(r.text)
                return
            results.append(r.json()["inserted"])

    threads = [threading.Thread(target=send, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 48 and sum(results) == 6 * 250 * 4
    assert srv.get(f"/workloads/{uid}/metrics/sources").json()["data_sources"] == [{"name": "wandb", "count": 6000}]
    assert sql_scalar(srv, "SELECT COUNT(*) FROM training_performance WHERE workload_uid = ?", (uid,)) == 6000
    m3 = data(srv, uid, metrics="m3")["data"]
    assert [p["iteration"] for p in m3] == list(range(1500)) and all(p["value"] == p["iteration"] * 3.0 for p in m3)


def test_ranks_and_runs_are_separate_series(srv):
    for rank in (0, 1):
        for run in ("a", "b"):
            srv.post("/wandb/metrics", metrics_body("wl-ranks", [("loss", 1, rank + 10 * (run == "b"))],
                                                            rank=rank, run_id=run))
    pts = data(srv, "wl-ranks", metrics="loss")["data"]
    assert len(pts) == 4
    assert [(p["rank"], p["run_id"]) for p in pts] == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    only1 = data(srv, "wl-ranks", metrics="loss", rank="1")["data"]
    assert {p["rank"] for p in only1} == {1}
    runb = data(srv, "wl-ranks", metrics="loss", run_id="b")["data"]
    assert {p["value"] for p in runb} == {10, 11}
    assert srv.get("/workloads/wl-ranks").json()["ranks"] == [0, 1]


def test_nan_and_infinities_round_trip(srv):
    body = metrics_body("wl-nan", [("g", 1, "NaN"), ("g", 2, "Infinity"), ("g", 3, "-Infinity"), ("g", 4, 1.5),
                                   ("g", 5, 0.0), ("g", 6, -1e308)])
    assert srv.post("/wandb/metrics", body).status_code == 200
    vals = [p["value"] for p in data(srv, "wl-nan", metrics="g")["data"]]
    assert vals == ["NaN", "Infinity", "-Infinity", 1.5, 0.0, -1e308]
    # A NaN is a stored point like any other: counted, and visible in SQL as a row.
    assert sql_scalar(srv, "SELECT COUNT(*) FROM training_performance WHERE workload_uid = ?",
                      ("wl-nan",)) == 6
    # Re-sending a NaN with a real value replaces it.
    srv.post("/wandb/metrics", metrics_body("wl-nan", [("g", 1, 7.0)]))
    assert data(srv, "wl-nan", metrics="g")["data"][0]["value"] == 7.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in vals)


def test_batch_is_one_transaction(srv):
    good = metrics_body("wl-batch", [("loss", 1, 1.0)])
    bad = metrics_body("wl-batch", [("loss", 2, 1.0)], rank=-1)  # a request-level error
    r = srv.post("/wandb/batch", {"metrics": [good, bad]})
    assert r.status_code == 400
    assert r.json()["field"] == "metrics[1].rank"
    assert srv.get("/workloads/wl-batch").status_code == 404
    r = srv.post("/wandb/batch", {
        "metrics": good, "logs": [{"line": "x"}],
        "detection": {"workload_uid": "wl-batch", "detection": {"wrapper": "lightning", "base": "pytorch",
                                                                "method": "exact", "confidence": 1.0}},
        "run": {"workload_uid": "wl-batch", "run_id": "r1", "event": "started", "project": "p", "name": "n"}})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["success"] is True
    assert res["results"]["metrics"]["count"] == 1 and res["results"]["logs"]["count"] == 1
    wl = srv.get("/workloads/wl-batch").json()
    assert wl["detection"]["wrapper"] == "lightning" and wl["runs"][0]["project"] == "p"


def test_best_detection_exact_beats_heuristic(srv):
    def det(wrapper, method, conf):
        return {"source": "wandb", "type": "framework_detection_raw", "workload_uid": "wl-det",
                "pod_name": "pod-0", "hints": {"wrapper_frameworks": [wrapper], "confidence": conf},
                "detection": {"wrapper": wrapper, "base": "megatron", "method": method, "confidence": conf}}

    for body in (det("primus", "exact", 0.9), det("lightning", "heuristic", 0.99)):
        r = srv.post("/wandb/detection", body)
        assert r.json() == {"message": "detection reported successfully"}
    wl = srv.get("/workloads/wl-det").json()
    assert wl["detection"]["wrapper"] == "primus" and wl["detection"]["method"] == "exact"
    assert wl["pods"] == ["pod-0"]
    listed = {w["workload_uid"]: w for w in srv.get("/workloads").json()["workloads"]}
    assert listed["wl-det"]["wrapper"] == "primus" and listed["wl-det"]["base"] == "megatron"
    # A seed-style report (hints only) is accepted and becomes a heuristic detection.
    r = srv.post("/wandb/detection", {"workload_uid": "wl-seed", "hints": {
        "wrapper_frameworks": ["primus"], "base_frameworks": ["megatron"], "confidence": 0.7}})
    assert r.status_code == 200
    d = srv.get("/workloads/wl-seed").json()["detection"]
    assert (d["wrapper"], d["base"], d["method"]) == ("primus", "megatron", "heuristic")


def test_a_later_partial_detection_does_not_replace_a_complete_one(srv):
    # Rank 0's adapter names both layers; a later report from a rank that only saw the
    # base framework, at the same method and confidence, must not erase the wrapper.
    def det(wrapper, base):
        return {"source": "wandb", "type": "framework_detection_raw", "workload_uid": "wl-partial",
                "pod_name": "pod-0", "hints": {},
                "detection": {"wrapper": wrapper, "base": base, "method": "exact", "confidence": 1.0}}

    for body in (det("lightning", "pytorch"), det(None, "pytorch")):
        assert srv.post("/wandb/detection", body).status_code == 200
    d = srv.get("/workloads/wl-partial").json()["detection"]
    assert (d["wrapper"], d["base"]) == ("lightning", "pytorch")
    assert srv.post("/wandb/detection", det("primus", "megatron")).status_code == 200  # complete and newer: wins
    d = srv.get("/workloads/wl-partial").json()["detection"]
    assert (d["wrapper"], d["base"]) == ("primus", "megatron")


def test_run_events_merge_config_and_finish(srv):
    base = {"workload_uid": "wl-run", "run_id": "abc", "pod_name": "p0"}
    srv.post("/wandb/run", {**base, "event": "started", "project": "proj", "name": "exp-1",
                                    "config": {"lr": 0.1}, "tags": ["x"]})
    srv.post("/wandb/run", {**base, "event": "config", "config": {"batch_size": 32}})
    srv.post("/wandb/run", {**base, "event": "summary", "summary": {"loss": 0.1}})
    run = srv.get("/workloads/wl-run").json()["runs"][0]
    assert run["status"] == "running" and run["finished_at"] is None
    assert run["config"] == {"lr": 0.1, "batch_size": 32} and run["summary"] == {"loss": 0.1}
    assert run["project"] == "proj" and run["name"] == "exp-1" and run["tags"] == ["x"]
    srv.post("/wandb/run", {**base, "event": "finished", "exit_code": 0})
    wl = srv.get("/workloads/wl-run").json()
    assert wl["runs"][0]["status"] == "finished" and wl["runs"][0]["finished_at"] is not None
    assert wl["status"] == "finished"
    r = srv.post("/wandb/run", {**base, "event": "exploded"})
    assert r.status_code == 400 and r.json()["field"] == "event"


def test_summary_keys_named_as_removed_leave_the_merged_summary(srv):
    # Summaries merge by top-level key (records of a run may arrive out of order); a key W&B
    # deleted is named in summary_removed, in /wandb/run and in /wandb/batch alike.
    base = {"workload_uid": "wl-sum", "run_id": "r", "pod_name": "p0"}
    srv.post("/wandb/run", {**base, "event": "summary", "summary": {"gone": 1.0, "kept": 1.0, "sub": {"a": 1}}})
    r = srv.post("/wandb/run", {**base, "event": "summary", "summary": {"kept": 2.0},
                                "summary_removed": ["gone", "sub", "never-there"]})
    assert r.status_code == 200, r.text
    assert srv.get("/workloads/wl-sum").json()["runs"][0]["summary"] == {"kept": 2.0}
    r = srv.post("/wandb/batch", {"run": [
        {**base, "event": "summary", "summary": {"kept": 3.0, "back": 1.0}},
        {**base, "event": "finished", "summary": {"kept": 3.0}, "summary_removed": ["back"]}]})
    assert r.status_code == 200, r.text
    assert srv.get("/workloads/wl-sum").json()["runs"][0]["summary"] == {"kept": 3.0}
    r = srv.post("/wandb/run", {**base, "summary_removed": "gone"})
    assert r.status_code == 400 and r.json()["field"] == "summary_removed", r.text


def _mixed_points():
    # One 600-character name and one name with NUL among good points: the two are
    # refused, every good point is stored.
    return [{"name": "loss", "value": 1.0, "step": 1}, {"name": "x" * 600, "value": 2.0, "step": 1},
            {"name": "loss", "value": 3.0, "step": 2}, {"name": "bad\x00name", "value": 4.0, "step": 2},
            {"name": "acc", "value": 0.5, "step": 2.5, "row": 2}]


def test_bad_points_of_a_metrics_request_are_refused_alone(srv, uid):
    r = srv.post("/wandb/metrics", {"workload_uid": uid, "run_id": "r", "metrics": _mixed_points()})
    assert r.status_code == 200, r.text
    ans = r.json()
    assert (ans["count"], ans["inserted"], ans["rejected_count"]) == (3, 3, 2)
    assert [(x["index"], x["field"]) for x in ans["rejected"]] == [(1, "metrics[1].name"), (3, "metrics[3].name")]
    assert "at most 512 characters" in ans["rejected"][0]["message"]
    assert "NUL" in ans["rejected"][1]["message"]
    got = sorted((p["metric_name"], p["row"], p["value"]) for p in data(srv, uid)["data"])
    assert got == [("acc", 2, 0.5), ("loss", 1, 1.0), ("loss", 2, 3.0)]


def test_bad_points_of_a_batch_part_are_refused_alone(srv, uid):
    good = metrics_body(uid, [("lr", 0, 0.1)])
    mixed = {"workload_uid": uid, "run_id": "r", "metrics": _mixed_points()}
    r = srv.post("/wandb/batch", {"metrics": [good, mixed]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]["metrics"]
    assert (res["count"], res["inserted"], res["rejected_count"]) == (4, 4, 2)
    assert [(x["index"], x["field"]) for x in res["rejected"]] == [
        (1, "metrics[1].metrics[1].name"), (3, "metrics[1].metrics[3].name")]
    assert sorted(p["metric_name"] for p in data(srv, uid)["data"]) == ["acc", "loss", "loss", "lr"]


def test_only_the_first_100_refused_points_are_listed_but_all_are_counted(srv, uid):
    pts = [{"name": "", "value": 1.0, "step": s} for s in range(150)] + [{"name": "ok", "value": 1.0}]
    ans = srv.post("/wandb/metrics", {"workload_uid": uid, "metrics": pts}).json()
    assert ans["count"] == 1 and ans["rejected_count"] == 150 and len(ans["rejected"]) == 100
    assert ans["rejected"][-1]["index"] == 99


def test_batch_obeys_the_point_limit_over_all_its_metrics_parts(srv, uid):
    from primus_lens_wandb_exporter.limits import MAX_POINTS_PER_REQUEST

    half = MAX_POINTS_PER_REQUEST // 2 + 1  # each part is under the limit, the request is over it
    parts = [metrics_body(uid, [("m", i, 1.0) for i in range(half)], rank=k) for k in range(2)]
    r = srv.post("/wandb/batch", {"metrics": parts})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_many_points" and r.json()["field"] == "metrics"
    assert srv.get(f"/workloads/{uid}").status_code == 404
