"""Query API: downsampling keeps extremes and NaN, filters work alone and together, 404s."""

from __future__ import annotations

import math
import random

import pytest
from helpers.server_data import data, metrics_body, sql_scalar

T0 = 1_700_000_000.0  # epoch seconds of step 0 in these tests


def _load(srv, uid, values, name="loss", rank=0, chunk=5000):
    """Send ``values[step]`` with timestamp T0 + step seconds, in chunks."""
    for lo in range(0, len(values), chunk):
        body = metrics_body(uid, [(name, s, values[s], T0 + s) for s in range(lo, min(lo + chunk, len(values)))],
                            rank=rank)
        r = srv.post("/wandb/metrics", body)
        assert r.status_code == 200, r.text


def _num(v):
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(v, v) if isinstance(v, str) else v


@pytest.mark.parametrize("n,max_points", [(250, 40), (3000, 200), (20000, 200)],
                         ids=["raw-series", "rolled-up-narrow-span", "rolled-up-series"])
def test_downsampling_keeps_first_last_extremes_and_every_nan(srv, uid, n, max_points):
    rnd = random.Random(n)
    values = [math.sin(s / 50.0) + rnd.uniform(-0.1, 0.1) for s in range(n)]
    values[n // 3] = "NaN"          # a NaN spike must stay visible
    values[n // 3 + 7] = "Infinity"
    values[n // 2] = 50.0           # global max
    values[2 * n // 3] = -40.0      # global min
    _load(srv, uid, values)
    out = data(srv, uid, metrics="loss", max_points=max_points)
    pts = out["data"]
    assert out["total_count"] == len(pts)
    steps = [p["iteration"] for p in pts]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert len(pts) <= max_points + 2  # plus the two non-finite points
    got = {p["iteration"]: p["value"] for p in pts}
    assert got[0] == values[0] and got[n - 1] == values[n - 1]
    assert got[n // 3] == "NaN" and got[n // 3 + 7] == "Infinity"
    assert got[n // 2] == 50.0 and got[2 * n // 3] == -40.0
    for s, v in got.items():  # every returned point is a real stored point
        assert v == values[s]
    # Without max_points every point comes back.
    assert data(srv, uid, metrics="loss")["total_count"] == n


def test_downsampling_follows_updates_of_existing_points(srv, uid):
    n = 20000
    values = [float(s % 100) for s in range(n)]
    _load(srv, uid, values)
    # Re-send one step with a new extreme, and overwrite the old maximum's bucket.
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", 12345, -999.0, T0 + 12345), ("loss", 17, "NaN", T0 + 17)]))
    got = {p["iteration"]: p["value"] for p in data(srv, uid, metrics="loss", max_points=400)["data"]}
    assert got[12345] == -999.0 and got[17] == "NaN"
    # Appending past the end (a new rollup level) keeps the old extremes too.
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", 70000, 1e6, T0 + 70000)]))
    got = {p["iteration"]: p["value"] for p in data(srv, uid, metrics="loss", max_points=400)["data"]}
    assert got[12345] == -999.0 and got[17] == "NaN" and got[70000] == 1e6 and got[0] == 0.0


def test_after_step_returns_only_later_steps(srv, uid):
    _load(srv, uid, [float(s) for s in range(12000)])
    pts = data(srv, uid, metrics="loss", after_step=11990)["data"]
    assert [p["iteration"] for p in pts] == list(range(11991, 12000))
    ds = data(srv, uid, metrics="loss", after_step=5000, max_points=100)["data"]
    assert ds and min(p["iteration"] for p in ds) == 5001 and max(p["iteration"] for p in ds) == 11999
    assert len(ds) <= 100


def test_start_and_end_filter_independently(srv, uid):
    _load(srv, uid, [float(s) for s in range(100)])
    ms = lambda s: (T0 + s) * 1000  # noqa: E731
    only_start = data(srv, uid, metrics="loss", start=ms(90))["data"]
    assert [p["iteration"] for p in only_start] == list(range(90, 100))
    only_end = data(srv, uid, metrics="loss", end=ms(9))["data"]
    assert [p["iteration"] for p in only_end] == list(range(0, 10))
    both = data(srv, uid, metrics="loss", start=ms(40), end=ms(44))["data"]
    assert [p["iteration"] for p in both] == [40, 41, 42, 43, 44]
    assert both[0]["timestamp"] == ms(40)


def test_time_range_on_a_rolled_up_series(srv, uid):
    n = 20000
    values = [float(s) for s in range(n)]
    _load(srv, uid, values)
    ms = lambda s: (T0 + s) * 1000  # noqa: E731
    pts = data(srv, uid, metrics="loss", start=ms(5000), end=ms(6000), max_points=100)["data"]
    steps = [p["iteration"] for p in pts]
    assert steps[0] == 5000 and steps[-1] == 6000 and len(steps) <= 100
    assert all(5000 <= s <= 6000 for s in steps)


def test_metrics_parameter_selects_and_defaults_to_all(srv, uid):
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", 1, 1.0), ("acc", 1, 0.5), ("lr", 1, 0.1)]))
    names = {p["metric_name"] for p in data(srv, uid, metrics="loss,acc")["data"]}
    assert names == {"loss", "acc"}
    out = data(srv, uid)
    assert {p["metric_name"] for p in out["data"]} == {"loss", "acc", "lr"}
    assert out["data_source"] == "wandb" and out["workload_uid"] == uid
    p = out["data"][0]
    assert set(p) == {"metric_name", "value", "timestamp", "iteration", "row", "data_source", "rank", "run_id"}
    assert data(srv, uid, data_source="other")["data"] == []


@pytest.mark.parametrize("path", ["", "/metrics/sources", "/metrics/available?data_source=wandb",
                                  "/metrics/data?data_source=wandb&metrics=loss"])
def test_unknown_workload_is_404(srv, path):
    r = srv.get("/workloads/no-such-workload" + path)
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "workload_not_found" and "no-such-workload" in body["message"]
    assert set(body) == {"error", "message", "field"}


def test_unknown_routes_and_methods_answer_in_the_error_shape(srv):
    """The protocol's error shape on Starlette's own 404/405 too, and a 405 names the allowed
    methods (RFC 9110): ``Allow`` was dropped, and both bodies lacked ``field``."""
    import requests

    r = requests.get(srv.api + "/no/such/route", headers=srv.headers(), timeout=30)
    assert r.status_code == 404 and r.json() == {"error": "not_found", "message": "Not Found", "field": None}
    r = requests.post(srv.url + "/health", json={}, timeout=30)
    assert r.status_code == 405, r.text
    assert r.json() == {"error": "method_not_allowed", "message": "Method Not Allowed", "field": None}
    assert "GET" in r.headers["Allow"]
    # A path served by two routes (GET and DELETE of a workload) names both.
    r = requests.put(srv.api + "/workloads/w1", json={}, headers=srv.headers(), timeout=30)
    assert r.status_code == 405 and {"GET", "DELETE"} <= set(map(str.strip, r.headers["Allow"].split(","))), r.headers


@pytest.mark.parametrize("params, field", [
    ({"max_points": "many"}, "max_points"), ({"max_points": 0}, "max_points"), ({"start": "yesterday"}, "start"),
    ({"end": -5}, "end"), ({"rank": "zero"}, "rank"), ({"after_step": "x"}, "after_step"),
])
def test_bad_query_parameter_is_400_naming_it(srv, uid, params, field):
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", 1, 1.0)]))
    r = srv.get(f"/workloads/{uid}/metrics/data", **params)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and field in r.json()["message"]


def test_sources_available_and_faq_q9_sql_agree(srv, uid):
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", s, 1.0) for s in range(30)] +
                                            [("acc", s, 1.0) for s in range(20)]))
    srv.post("/wandb/metrics", metrics_body(uid, [("tokens", s, 1.0) for s in range(5)], source="custom"))
    src = srv.get(f"/workloads/{uid}/metrics/sources").json()
    assert src == {"workload_uid": uid, "data_sources": [{"name": "custom", "count": 5},
                                                         {"name": "wandb", "count": 50}], "total_count": 2}
    avail = srv.get(f"/workloads/{uid}/metrics/available", data_source="wandb").json()
    assert avail["metrics"] == [{"name": "acc", "data_source": ["wandb"], "count": 20},
                                {"name": "loss", "data_source": ["wandb"], "count": 30}]
    assert avail["total_count"] == 2
    # FAQ Q9, verbatim apart from the workload id.
    q9 = f"SELECT COUNT(*) FROM training_performance WHERE workload_uid = '{uid}' AND data_source = 'wandb';"
    assert sql_scalar(srv, q9) == 50


def test_workload_list_and_detail(srv, uid):
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", s, 1.0) for s in range(10)], rank=0))
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", s, 1.0) for s in range(10)], rank=1))
    listed = srv.get("/workloads", search=uid[:-3]).json()
    assert listed["total_count"] == len(listed["workloads"]) >= 1
    w = [x for x in listed["workloads"] if x["workload_uid"] == uid][0]
    assert w["points"] == 20 and w["ranks"] == 2 and w["metrics"] == 1 and w["status"] == "live"
    assert srv.get("/workloads", search="zzz-not-there").json()["total_count"] == 0
    detail = srv.get(f"/workloads/{uid}").json()
    assert detail["ranks"] == [0, 1] and detail["points"] == 20 and detail["data_sources"] == ["wandb"]
    assert detail["pods"] == ["train-pod-0"] and detail["detection"] is None
    by_points = srv.get("/workloads", sort="points", order="desc").json()["workloads"]
    assert [x["points"] for x in by_points] == sorted((x["points"] for x in by_points), reverse=True)
    assert srv.get("/workloads", sort="bogus").status_code == 400


def test_health_reports_database(srv):
    r = srv.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["database"] in ("sqlite", "postgresql")


def test_api_index_answers_for_grafana_save_and_test(srv):
    r = srv.get("/api/v1")
    assert r.status_code == 200
    assert "/api/v1/workloads/{uid}/metrics/data" in r.json()["endpoints"]


def test_overlong_name_and_rank_lists_are_400(srv, uid):
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", 1, 1.0)]))
    r = srv.get(f"/workloads/{uid}/metrics/data", metrics=",".join(f"m{i}" for i in range(5000)))
    assert r.status_code == 400 and r.json()["field"] == "metrics"
    r = srv.get(f"/workloads/{uid}/metrics/data", rank=",".join(str(i) for i in range(5000)))
    assert r.status_code == 400 and r.json()["field"] == "rank"
    many = ",".join(f"m{i}" for i in range(999)) + ",loss"
    assert [p["metric_name"] for p in data(srv, uid, metrics=many)["data"]] == ["loss"]


def test_a_metric_name_with_a_comma_or_edge_spaces_is_reachable_by_a_json_array(srv, uid):
    """Names are stored as sent, so "top1,top5" and " pad " are metrics of their own; a comma list
    splits and trims them (nothing found), a JSON array of exact names reaches them."""
    import json

    r = srv.post("/wandb/metrics", metrics_body(uid, [("top1,top5", 1, 1.0), (" pad ", 1, 2.0), ("loss", 1, 3.0)]))
    assert r.status_code == 200 and r.json()["inserted"] == 3, r.text
    exact = json.dumps(["top1,top5", " pad "])
    got = srv.get(f"/workloads/{uid}/metrics/data", metrics=exact, max_points=100).json()
    assert sorted((p["metric_name"], p["value"]) for p in got["data"]) == [(" pad ", 2.0), ("top1,top5", 1.0)]
    streamed = srv.get(f"/workloads/{uid}/metrics/data", metrics=exact).json()
    assert streamed["total_count"] == 2
    runs = srv.get("/runs/data", workloads=uid, metrics=exact, max_points=100).json()
    assert sorted(x["metric_name"] for x in runs["series"]) == [" pad ", "top1,top5"]
    # The comma list still works for plain names (trimmed), and reaches neither of those.
    assert srv.get(f"/workloads/{uid}/metrics/data", metrics=" loss ,nope", max_points=100).json()["total_count"] == 1
    assert srv.get(f"/workloads/{uid}/metrics/data", metrics="top1,top5", max_points=100).json()["total_count"] == 0
    # A list whose first name starts with "[" but is not a JSON array stays a comma list.
    assert srv.get(f"/workloads/{uid}/metrics/data", metrics="[x,loss", max_points=100).json()["total_count"] == 1
    # An escaped NUL inside the array is a 400 like a raw one (PostgreSQL: a 500, or a cut stream);
    # an empty array names no metric (it answered every metric).
    for path, extra in ((f"/workloads/{uid}/metrics/data", {}), (f"/workloads/{uid}/metrics/data", {"max_points": 100}),
                        ("/runs/data", {"workloads": uid, "max_points": 100})):
        for bad in ('["a\\u0000b"]', "[]"):
            r = srv.get(path, metrics=bad, **extra)
            assert r.status_code == 400 and r.json()["field"] == "metrics", (path, bad, r.text)
