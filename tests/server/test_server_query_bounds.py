"""Every metrics/data query is bounded: a property test over all its parameters.

Against a real server (SQLite and PostgreSQL) holding a small real series set: a
few hundred points per series (enough for a rollup), some NaN/infinite values,
two ranks, one metric whose chart step differs from its row.  Every generated
query must answer 200 or 400 (the documented JSON error shape), never 5xx; each
answered series holds at most ``max_points`` points plus its non-finite ones,
and every point is a stored one that passes the filters.  The per-request client
timeout is the hang detector (``max_points=4`` looped forever in
``rollup.choose_level``), not a speed assertion.
"""

from __future__ import annotations

import math
import uuid

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from helpers.server_data import metrics_body

T0 = 1_700_000_000.0
N = 300
#: Seconds a query may take before it counts as hung (a loaded CI box answers these in milliseconds).
HANG_S = 10
METRICS = ("loss", "lr", "half")
RANKS = (0, 1)


def _value(name, row, rank):
    if name == "loss" and row % 37 == 5:
        return "NaN"
    if name == "lr" and row in (17, 250):
        return "Infinity" if row == 17 else "-Infinity"
    return math.sin(row * 0.1 + rank) * (row + 1)


def _num(v):
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(v, v) if isinstance(v, str) else v


@pytest.fixture(scope="module")
def stored(srv):
    """Load the series once per server; return (uid, {(metric, rank, row): (step, value, ts_ms)})."""
    uid = f"bounds-{uuid.uuid4().hex[:8]}"
    truth = {}
    for rank in RANKS:
        pts = []
        for name in METRICS:
            for row in range(N):
                # "half": a define_metric step that is not the row (step = row / 2), so the
                # rollup path has to look the kept points' steps up.
                step = row / 2 if name == "half" else row
                v = _value(name, row, rank)
                ts = T0 + row
                pts.append({"name": name, "row": row, "step": step, "value": v, "timestamp": ts})
                truth[(name, rank, row)] = (step, _num(v), ts * 1000)
        body = metrics_body(uid, [], rank=rank)
        body["metrics"] = pts
        r = srv.post("/wandb/metrics", body)
        assert r.status_code == 200, r.text
    return uid, truth


_int_or_junk = st.one_of(st.integers(-5, 2_000_000), st.sampled_from(["", "x", "1e3", "4.5", "-0"]))
_max_points = st.one_of(st.none(), st.integers(4, 12), st.integers(4, 400), st.integers(4, 1_000_000), _int_or_junk)
_ts_ms = st.one_of(st.none(), st.floats(T0 * 1000 - 5000, (T0 + N) * 1000 + 5000, allow_nan=False),
                   st.sampled_from([-1, 0, 1e17, "soon"]))
_after_step = st.one_of(st.none(), st.floats(-10, N + 10, allow_nan=False), st.integers(-2, N + 2),
                        st.sampled_from([1e300, "nan", "x"]))
_after_row = st.one_of(st.none(), st.integers(-3, N + 3), st.sampled_from([2**63, "1.5", "x"]))
_ranks = st.one_of(st.none(), st.lists(st.integers(-1, 3), min_size=1, max_size=4).map(lambda r: ",".join(map(str, r))),
                   st.sampled_from(["x", "0,,1", " 1 ", str(2**40)]))
_metrics = st.one_of(st.none(), st.lists(st.sampled_from(METRICS + ("nope", "")), min_size=1, max_size=4)
                     .map(",".join))
_x = st.one_of(st.sampled_from(["step", "row", "time"]), st.just("bogus"))


@given(max_points=_max_points, start=_ts_ms, end=_ts_ms, after_step=_after_step, after_row=_after_row,
       rank=_ranks, metrics=_metrics, x=_x)
@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_metrics_data_query_is_bounded(srv, stored, max_points, start, end, after_step, after_row,
                                             rank, metrics, x):
    uid, truth = stored
    params = {k: v for k, v in dict(max_points=max_points, start=start, end=end, after_step=after_step,
                                    after_row=after_row, rank=rank, metrics=metrics, x=x).items() if v is not None}
    # The timeout is the hang detector: a request still running after it fails the test.
    r = requests.get(f"{srv.api}/workloads/{uid}/metrics/data", params=params, headers=srv.headers(),
                     timeout=HANG_S)
    assert r.status_code in (200, 400), (params, r.status_code, r.text[:500])
    body = r.json()
    if r.status_code == 400:
        assert set(body) == {"error", "message", "field"} and all(isinstance(body[k], str) for k in body), body
        return
    mp = body_mp = int(params["max_points"]) if "max_points" in params else None
    per_series = {}
    for p in body["data"]:
        key = (p["metric_name"], p["rank"], p["row"])
        assert key in truth, p
        step, value, ts = truth[key]
        v = _num(p["value"])
        assert (v == value) or (v != v and value != value), (p, value)
        assert p["iteration"] == step and p["timestamp"] == ts, (p, truth[key])
        # Every point passes the filters.
        if "after_row" in params:
            assert p["row"] > int(params["after_row"]), (params, p)
        if "after_step" in params:
            assert step > float(params["after_step"]), (params, p)
        if "start" in params:
            assert ts >= float(params["start"]), (params, p)
        if "end" in params:
            assert ts <= float(params["end"]), (params, p)
        s = per_series.setdefault((p["metric_name"], p["rank"]), [0, 0])
        s[0] += 1
        s[1] += not math.isfinite(v)
    assert body["total_count"] == len(body["data"])
    if body_mp is not None:
        for series, (n, n_nonfinite) in per_series.items():
            assert n <= mp + n_nonfinite, (params, series, n, n_nonfinite)


@pytest.mark.parametrize("max_points", list(range(4, 12)))
def test_small_max_points_on_a_rolled_up_series_answers(srv, stored, max_points):
    """The reported hang: ``max_points`` 4..11 on a 300-point (rolled-up) series."""
    uid, _ = stored
    r = requests.get(f"{srv.api}/workloads/{uid}/metrics/data", params={"metrics": "lr", "rank": 0,
                                                                       "max_points": max_points},
                     headers=srv.headers(), timeout=HANG_S)
    assert r.status_code == 200, r.text
    pts = r.json()["data"]
    n_nonfinite = sum(1 for p in pts if isinstance(p["value"], str))
    assert 2 <= len(pts) <= max_points + n_nonfinite
    rows = [p["row"] for p in pts]
    assert rows[0] == 0 and rows[-1] == N - 1  # first and last kept
