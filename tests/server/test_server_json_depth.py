"""JSON depth: one limit (limits.MAX_JSON_DEPTH), a JSON 400 on every ingest path, nothing
stored that the read side cannot serve (a 253-level run config used to be stored, after
which GET /workloads/{uid} answered a plain-text 500 for good)."""

from __future__ import annotations

import json

import pytest
import requests
from helpers.server_data import metrics_body

from primus_lens_wandb_exporter.limits import MAX_JSON_DEPTH


def nest(levels: int, leaf=1):
    """A value of ``levels`` objects inside each other (``nest(1) == {"a": 1}``)."""
    v = leaf
    for _ in range(levels):
        v = {"a": v}
    return v


class Deep:
    """``nest(levels)`` as raw JSON text: Python's and orjson's encoders stop near 1,000 and 255 levels."""

    def __init__(self, levels: int):
        self.text = '{"a":' * levels + "1" + "}" * levels


def post(srv, path, body):
    """POST ``body`` with each :class:`Deep` inside written out as raw JSON."""
    deep = []

    def default(o):
        deep.append(o.text)
        return f"__deep{len(deep) - 1}__"

    text = json.dumps(body, default=default)
    for i, t in enumerate(deep):
        text = text.replace(f'"__deep{i}__"', t)
    return requests.post(srv.api + path, data=text.encode(), headers={"Content-Type": "application/json",
                                                                      **srv.headers()}, timeout=60)


def _run(uid, **extra):
    return {"workload_uid": uid, "run_id": "r1", "event": "started", "project": "p", **extra}


def _assert_too_deep(r, field=None):
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "message", "field"} and body["error"] == "too_deep", body
    if field is not None:
        assert body["field"] == field, body


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, 253, 254, 300, 1000])
def test_deep_run_config_is_refused_and_nothing_is_stored(srv, uid, levels):
    _assert_too_deep(post(srv, "/wandb/run", _run(uid, config=Deep(levels))), "config")
    assert srv.get(f"/workloads/{uid}").status_code == 404  # the whole request was refused


def test_config_at_the_limit_is_stored_and_served_back(srv, uid):
    config = nest(MAX_JSON_DEPTH - 1)  # + the body itself = exactly the limit
    r = srv.post("/wandb/run", _run(uid, config=config))
    assert r.status_code == 200, r.text
    w = srv.get(f"/workloads/{uid}")
    assert w.status_code == 200, w.text
    assert w.json()["runs"][0]["config"] == config


@pytest.mark.parametrize("where", ["unknown_field", "exporter", "point_field", "exporter_list"])
@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, 1000])
def test_deep_metrics_body_is_refused_on_the_fast_path_too(srv, uid, where, levels):
    body = metrics_body(uid, [("loss", 0, 1.0)])
    if where == "unknown_field":
        body["extra"] = Deep(levels)
    elif where == "exporter":
        body["exporter"] = {"sent": 1, "deep": Deep(levels)}
    elif where == "exporter_list":
        body["exporter"] = [Deep(levels)]
    else:
        body["metrics"][0]["tags"] = Deep(levels)
    _assert_too_deep(post(srv, "/wandb/metrics", body))
    assert srv.get(f"/workloads/{uid}").status_code == 404


def test_deep_detection_and_batch_parts_are_refused(srv, uid):
    deep = nest(MAX_JSON_DEPTH + 5)
    _assert_too_deep(srv.post("/wandb/detection", {"workload_uid": uid, "evidence": {"x": deep}}), "evidence")
    _assert_too_deep(srv.post("/wandb/batch", {"run": [_run(uid, summary=deep)]}), "run")
    _assert_too_deep(srv.post("/wandb/batch", {"metrics": [{**metrics_body(uid, [("loss", 0, 1.0)]),
                                                             "extra": deep}]}), "metrics")
    _assert_too_deep(srv.post("/wandb/batch", {"detection": {"workload_uid": uid, "evidence": deep}}), "detection")
    assert srv.get(f"/workloads/{uid}").status_code == 404
    # A body at the limit still goes through every path.
    ok = nest(MAX_JSON_DEPTH - 4)  # batch -> run list -> run -> summary
    r = srv.post("/wandb/batch", {"run": [_run(uid, summary=ok)], "metrics": metrics_body(uid, [("loss", 0, 1.0)])})
    assert r.status_code == 200, r.text
    assert srv.get(f"/workloads/{uid}").json()["runs"][0]["summary"] == ok


def test_unknown_fields_of_normal_depth_still_accepted(srv, uid):
    """The fast path refuses unknown fields only to hand them to the full path, which keeps them legal."""
    body = metrics_body(uid, [("loss", 0, 1.0)], extra={"k": [1, 2]})
    body["metrics"][0]["tags"] = {"phase": "train"}
    r = srv.post("/wandb/metrics", body)
    assert r.status_code == 200 and r.json()["count"] == 1, r.text


@pytest.mark.parametrize("lens_db_kind", ["sqlite"], indirect=True)
def test_unexpected_server_error_is_json(lens_server, uid):
    """A run config stored deep before the limit existed (written here straight into the
    database) cannot be encoded: the 500 is the documented JSON error, not plain text."""
    import sqlite3

    assert lens_server.post("/wandb/run", _run(uid, config={"a": 1})).status_code == 200
    conn = sqlite3.connect(lens_server.sqlite_path)
    with conn:
        conn.execute("UPDATE runs SET config = ? WHERE workload_uid = ?", (Deep(300).text, uid))
    conn.close()
    r = lens_server.get(f"/workloads/{uid}")
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == "internal_error"
