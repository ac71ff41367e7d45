"""A point is identified by its W&B history row; its chart step is any number.

W&B logs every ``run.log`` call as one history row (``_step``); a key charted
against a ``define_metric`` step metric has that metric's value as its x, which may
repeat over rows, go back, or be fractional.  Lens keys a point by
(workload, source, run, rank, name, row) and stores the step beside it.
"""

from __future__ import annotations

import math

from helpers.server_data import data, metrics_body, sql_scalar


def _post(srv, uid, points, **extra):
    r = srv.post("/wandb/metrics", {"workload_uid": uid, "run_id": "r", "metrics": points, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _pts(srv, uid, **params):
    return [(p["row"], p["iteration"], p["value"]) for p in data(srv, uid, **params)["data"]]


def test_two_rows_with_the_same_step_are_two_points(srv, uid):
    # eval/loss charted against epoch: two rows logged during epoch 3.
    ans = _post(srv, uid, [{"name": "eval/loss", "value": 0.5, "step": 3, "row": 117},
                           {"name": "eval/loss", "value": 0.4, "step": 3, "row": 118}])
    assert ans["count"] == ans["inserted"] == 2
    assert _pts(srv, uid) == [(117, 3, 0.5), (118, 3, 0.4)]
    assert sql_scalar(srv, "SELECT COUNT(*) FROM training_performance WHERE workload_uid = ?", (uid,)) == 2


def test_a_fractional_step_is_stored_exactly_and_does_not_overwrite_its_integer_neighbour(srv, uid):
    _post(srv, uid, [{"name": "loss", "value": 1.0, "step": 3}])  # an old client: row = step = 3
    _post(srv, uid, [{"name": "loss", "value": 2.0, "step": 3.5, "row": 4},
                     {"name": "loss", "value": 3.0, "step": -0.25, "row": 5}])
    got = data(srv, uid)["data"]
    assert [(p["row"], p["iteration"], p["value"]) for p in got] == [(5, -0.25, 3.0), (3, 3, 1.0), (4, 3.5, 2.0)]
    assert type(got[1]["iteration"]) is int and type(got[2]["iteration"]) is float
    assert sql_scalar(srv, "SELECT iteration FROM training_performance WHERE workload_uid = ? AND row_index = 4",
                      (uid,)) == 3.5


def test_resending_the_same_row_replaces_it_and_never_duplicates(srv, uid):
    first = _post(srv, uid, [{"name": "loss", "value": 1.0, "step": 2.5, "row": 10},
                             {"name": "loss", "value": 2.0, "step": 2.5, "row": 11}])
    assert first["inserted"] == 2
    # A retried batch (new value and step for row 10) plus one new row.
    again = _post(srv, uid, [{"name": "loss", "value": 9.0, "step": 2.75, "row": 10},
                             {"name": "loss", "value": 2.0, "step": 2.5, "row": 11},
                             {"name": "loss", "value": 3.0, "step": 3, "row": 12}])
    assert again["count"] == 3 and again["inserted"] == 1
    assert _pts(srv, uid) == [(11, 2.5, 2.0), (10, 2.75, 9.0), (12, 3, 3.0)]
    avail = srv.get(f"/workloads/{uid}/metrics/available").json()["metrics"]
    assert avail == [{"name": "loss", "data_source": ["wandb"], "count": 3}]


def test_x_orders_points_by_step_row_or_time(srv, uid):
    # Rows logged out of step order (a step metric that goes back) and out of time order.
    t = 1_764_000_000.0
    _post(srv, uid, [{"name": "m", "value": 1.0, "step": 5, "row": 0, "timestamp": t + 2},
                     {"name": "m", "value": 2.0, "step": 1, "row": 1, "timestamp": t + 3},
                     {"name": "m", "value": 3.0, "step": 5, "row": 2, "timestamp": t + 1},
                     {"name": "m", "value": 4.0, "step": 0.5, "row": 3, "timestamp": t}])
    rows = {x: [p["row"] for p in data(srv, uid, x=x)["data"]] for x in ("step", "row", "time")}
    assert rows == {"step": [3, 1, 0, 2], "row": [0, 1, 2, 3], "time": [3, 2, 0, 1]}
    assert [p["row"] for p in data(srv, uid)["data"]] == rows["step"]  # x=step is the default
    r = srv.get(f"/workloads/{uid}/metrics/data", x="epoch")
    assert r.status_code == 400 and r.json()["field"] == "x"


def test_after_row_returns_only_newer_rows_and_after_step_takes_a_float(srv, uid):
    _post(srv, uid, [{"name": "m", "value": float(r), "step": 10 - r / 2, "row": r} for r in range(8)])
    assert [p["row"] for p in data(srv, uid, after_row=5, x="row")["data"]] == [6, 7]
    assert [p["row"] for p in data(srv, uid, after_row=-1, x="row")["data"]] == list(range(8))
    assert data(srv, uid, after_row=7)["data"] == []
    # Steps 10, 9.5, ... 6.5: after_step compares the step, not the row.
    assert [p["iteration"] for p in data(srv, uid, after_step=8.75)["data"]] == [9, 9.5, 10]
    assert [p["row"] for p in data(srv, uid, after_step=8.75, max_points=4)["data"]] == [2, 1, 0]


def test_downsampling_buckets_over_rows_and_returns_only_real_points(srv, uid):
    # 5,000 rows (a rolled-up series), steps repeating and fractional (row // 7 + 0.5),
    # one NaN and one +Infinity; max_points keeps first/last/min/max and non-finite.
    n = 5000
    stored = {}
    for r in range(n):
        v = math.sin(r / 40.0)
        if r == 1234:
            v = -7.0
        if r == 4321:
            v = 9.0
        stored[r] = (r // 7 + 0.5, v)
    stored[2000] = (stored[2000][0], "NaN")
    stored[3000] = (stored[3000][0], "Infinity")
    body = [{"name": "loss", "value": v, "step": st, "row": r} for r, (st, v) in stored.items()]
    for i in range(0, n, 1000):
        _post(srv, uid, body[i:i + 1000])
    for params in ({"max_points": 200}, {"max_points": 200, "x": "row"}, {"max_points": 100, "after_row": 999}):
        got = data(srv, uid, **params)["data"]
        assert len(got) <= 2 * params["max_points"], params
        for p in got:  # every returned point is a stored one: row, step and value together
            assert (p["iteration"], p["value"]) == stored[p["row"]], p
        rows = [p["row"] for p in got]
        assert len(set(rows)) == len(rows)
        lo = params.get("after_row", -1) + 1
        assert {lo, n - 1, 1234, 4321, 2000, 3000} <= set(rows), params
        if params.get("x") == "row":
            assert rows == sorted(rows)
        else:
            assert [(p["iteration"], p["row"]) for p in got] == sorted((p["iteration"], p["row"]) for p in got)


def test_points_without_row_keep_working_for_old_clients(srv, uid):
    # Seed-guide clients send integer steps only: row = step, answers unchanged.
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", s, s / 10) for s in (0, 1, 2, 5)]))
    assert _pts(srv, uid) == [(0, 0, 0.0), (1, 1, 0.1), (2, 2, 0.2), (5, 5, 0.5)]
    assert [p["iteration"] for p in data(srv, uid, after_step=1)["data"]] == [2, 5]


def test_a_downsampled_answer_shows_a_step_changed_after_the_rollup_was_built(srv, uid):
    # Rows charted at their row (no step lookup needed) until one row is re-sent
    # with another step: the downsampled answer must show that step.
    _post(srv, uid, [{"name": "m", "value": 1.0 + r % 5, "row": r} for r in range(1000)])
    _post(srv, uid, [{"name": "m", "value": -99.0, "step": 123.25, "row": 500}])  # the minimum: kept
    got = {p["row"]: p["iteration"] for p in data(srv, uid, max_points=40, x="row")["data"]}
    assert got[500] == 123.25 and got[0] == 0 and got[999] == 999


def test_steps_at_the_limits_are_stored_as_doubles(srv, uid):
    # |step| <= 2**63 - 1, which as a double is 2**63: both ends and the int 2**63 itself.
    steps = [2**63, -(2**63), 2**63 - 1, 1e-300]
    pts = [{"name": "m", "value": float(r + 1), "step": st, "row": r} for r, st in enumerate(steps)]
    ans = _post(srv, uid, pts)
    assert ans["inserted"] == 4 and ans["rejected_count"] == 0
    assert _pts(srv, uid, x="row") == [(0, 2**63, 1.0), (1, -(2**63), 2.0), (2, 2**63, 3.0), (3, 1e-300, 4.0)]
