"""NUL in a stored JSON value (run config and summary, detection evidence and hints, run tags).

PostgreSQL's JSON cannot hold ``\\u0000``: one run whose config held it was stored, and from then
on every ``/runs`` filter, sort, group or column over config or summary answered 500, for every
user, until an admin found and deleted that workload.  Such a value is refused with a 400 naming
where it is, on both databases alike (like NUL in any other string field), and nothing of that
request is stored.
"""

from __future__ import annotations

import pytest
import requests

RUN = {"workload_uid": "wl-nul", "run_id": "r0", "event": "started", "config": {"lr": 0.1}}


@pytest.mark.parametrize("path,body,field", [
    ("/wandb/run", dict(RUN, run_id="r1", config={"lr": 0.2, "opt": {"name": "a\u0000b"}}), "config.opt.name"),
    ("/wandb/run", dict(RUN, run_id="r1", config={"k\u0000": 1}), "config.k\u0000"),
    ("/wandb/run", dict(RUN, run_id="r1", event="summary", summary={"s": ["x", "y\u0000"]}), "summary.s[1]"),
    ("/wandb/run", dict(RUN, run_id="r1", tags=["ok", "t\u0000"]), "tags"),
    ("/wandb/detection", {"workload_uid": "wl-nul", "evidence": {"env": "a\u0000"}}, "evidence.env"),
    ("/wandb/detection", {"workload_uid": "wl-nul", "hints": {"wrapper_frameworks": ["p\u0000"]}},
     "hints.wrapper_frameworks[0]"),
    ("/wandb/batch", {"run": [dict(RUN, run_id="r1", config={"x": "\u0000"})]}, "run[0].config.x"),
])
def test_a_nul_in_a_stored_json_value_is_refused_and_runs_stay_queryable(lens_server, path, body, field):
    srv = lens_server
    assert srv.post("/wandb/run", RUN).status_code == 200
    r = srv.post(path, body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["error"] == "invalid_field" and err["field"] == field and "NUL" in err["message"]
    for params in ({"q": "config.lr>0"}, {"q": "summary.s:x"}, {"sort": "config.lr"},
                   {"group_by": "config.lr"}, {"columns": "config.lr"}):
        got = srv.get("/runs", **params)
        assert got.status_code == 200, (params, got.text)
    runs = srv.get("/runs").json()["runs"]
    assert [x["run_id"] for x in runs] == ["r0"]  # nothing of the refused request stored


def test_an_escaped_backslash_before_u0000_is_text_not_nul(lens_server):
    """``"\\\\u0000"`` in JSON is a backslash then ``u0000``: stored as sent."""
    srv = lens_server
    body = dict(RUN, config={"path": "C:\\u0000dir"})
    assert srv.post("/wandb/run", body).status_code == 200
    got = requests.get(srv.api + "/workloads/wl-nul", headers=srv.headers(), timeout=30).json()
    assert got["runs"][0]["config"] == {"path": "C:\\u0000dir"}


def test_finding_the_nul_takes_linear_time_and_names_a_short_path():
    """The search built the path string of every item it passed: ten nested 20,000-character
    keys over a 100,000-item list took minutes of one core for one request.  The thread's
    timeout is a hang detector, not a speed check."""
    import threading

    from primus_lens_wandb_exporter.server import validate
    from primus_lens_wandb_exporter.server.errors import ApiError

    config = leaf = {}
    for _ in range(10):
        leaf[("k" * 20_000)] = leaf = {}
    leaf["v"] = [0] * 100_000 + ["a\u0000"]
    out = []

    def check():
        try:
            validate.run({"workload_uid": "w", "run_id": "r", "config": config})
        except ApiError as e:
            out.append(e)

    t = threading.Thread(target=check, daemon=True)
    t.start()
    t.join(60)
    (err,) = out
    assert err.status == 400 and err.field.startswith("config.kkk") and len(err.field) <= 220
