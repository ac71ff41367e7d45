"""The row form of /wandb/metrics (docs/protocol.md, *Rows*) on the real server, and its point count."""

import tracemalloc

import orjson
import pytest
from helpers.server_data import data

from primus_lens_wandb_exporter.limits import MAX_POINTS_PER_REQUEST
from primus_lens_wandb_exporter.server import validate
from primus_lens_wandb_exporter.server.errors import ApiError
from primus_lens_wandb_exporter.server.ingest import parse

NOW = 1_764_000_000.0


def _stored(srv, uid):
    return {(p["metric_name"], p["row"]): (p["value"], p["iteration"]) for p in data(srv, uid)["data"]}


def test_rows_are_stored_after_metrics_and_the_answer_counts_them(srv, uid):
    body = {"workload_uid": uid, "timestamp": NOW,
            "metrics": [{"name": "loss", "value": 9.0, "step": 1}, {"name": "eval", "value": 0.5, "step": 2.5,
                                                                     "row": 7}],
            "rows": [{"values": {"loss": 1.0, "acc": 0.25}, "step": 1},
                     {"values": {"loss": 2.0, "gnorm": "NaN"}, "step": 2, "timestamp": NOW + 1},
                     {"values": {"eval": 0.4}, "step": 3.5, "row": 8}]}
    ans = srv.post("/wandb/metrics", body).json()
    assert ans["rows"] == 3 and ans["count"] == 6 and ans["rejected_count"] == 0
    got = _stored(srv, uid)
    assert got[("loss", 1)] == (1.0, 1)  # the row's value, logged after the point's
    assert got[("acc", 1)] == (0.25, 1) and got[("loss", 2)] == (2.0, 2) and got[("gnorm", 2)][0] == "NaN"
    assert got[("eval", 7)] == (0.5, 2.5) and got[("eval", 8)] == (0.4, 3.5)


def test_a_bad_row_refuses_its_points_and_a_bad_value_only_itself(srv, uid):
    body = {"workload_uid": uid, "rows": [
        {"values": {"a": 1.0, "b": 2.0}, "step": -1},            # no row for a negative step: both refused
        {"values": {"a": 3.0, "b": True, "": 1.0}, "step": 1},   # b and the empty name refused, a stored
        "not a row",
        {"values": {"a": 4.0}, "step": 2, "timestamp": -5}]}     # bad timestamp: its point refused
    ans = srv.post("/wandb/metrics", body).json()
    assert ans["rows"] == 4 and ans["count"] == 1 and ans["rejected_count"] == 6
    assert [(r["index"], r["field"]) for r in ans["rejected"]] == [
        (0, "rows[0].row"), (1, "rows[1].values"), (1, "rows[1].values"), (2, "rows[2]"), (3, "rows[3].timestamp")]
    assert "'b' must be a number" in ans["rejected"][1]["message"] + ans["rejected"][2]["message"]
    assert _stored(srv, uid) == {("a", 1): (3.0, 1)}


@pytest.mark.parametrize("path", ["/wandb/metrics", "/wandb/batch"])
def test_the_point_limit_counts_the_values_of_rows(srv, uid, path):
    half = MAX_POINTS_PER_REQUEST // 2 + 1  # under the limit as points or as rows, over it together
    body = {"workload_uid": uid, "metrics": [{"name": f"m{i}", "value": 1.0, "step": 0} for i in range(half)],
            "rows": [{"values": {f"r{i}": 1.0 for i in range(half)}, "step": 1}]}
    r = srv.post(path, body if path == "/wandb/metrics" else {"metrics": body})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_many_points" and r.json()["field"].endswith("rows")
    assert srv.get(f"/workloads/{uid}").status_code == 404


def _big_rows_body(key: str, mib: int) -> bytes:
    """~``mib`` MiB of rows of 1,000 one-digit values each (~9 bytes a value) under ``key``."""
    row = b'{"values":{' + b",".join(b'"k%d":1' % i for i in range(1000)) + b'},"step":1}'
    n = mib * 2**20 // (len(row) + 1)
    return b'{"workload_uid":"w","run_id":"r","%s":[' % key.encode() + b",".join([row] * n) + b"]}"


def _refused_with_peak(raw: bytes):
    """The ApiError ``metrics_batch_bytes(raw)`` raises, and the memory traced (peak) until then."""
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as refused:
            validate.metrics_batch_bytes(raw, parse)
        return refused.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("key", ["rows", "\\u0072ows"])  # the same field, its key written escaped
def test_a_large_body_of_too_many_row_values_is_refused_before_they_are_built(key):
    raw = _big_rows_body(key, 8)  # ~930,000 values
    refused, peak = _refused_with_peak(raw)
    assert refused.status == 413 and refused.body()["field"] == "rows"
    # Decoding the values would cost ~110 bytes each (~100 MiB); the count copies the rows' bytes.
    assert peak < 3 * len(raw), f"{peak / 2**20:.0f} MiB traced for a {len(raw) / 2**20:.0f} MiB body"


def test_a_large_points_body_mentioning_rows_is_counted_not_refused():
    # 90,000 points with tags: more ":" than the rows bound, and the text "rows" (a metric name).
    point = '{"name":"rows","value":1.5,"step":%d,"timestamp":1700000000.5,"tags":{"a":"1","b":"2","c":"3","d":"4"}}'
    raw = ('{"workload_uid":"w","metrics":[' + ",".join(point % i for i in range(90_000)) + "]}").encode()
    assert len(raw) > 4 * 2**20 and raw.count(b":") > 8 * MAX_POINTS_PER_REQUEST
    batch = validate.metrics_batch_bytes(raw, orjson.loads)
    assert len(batch.series["rows"]) == 90_000


@pytest.mark.parametrize("path", ["/wandb/metrics", "/wandb/run", "/wandb/batch"])
def test_a_large_body_of_too_many_values_is_refused_before_it_is_parsed(srv, uid, path):
    # The values sit where no point count looks: an unknown field (accepted and ignored).
    junk = b"[" + b",".join([b"1.5"] * (validate.MAX_COMMAS + 10)) + b"]"  # ~8 MB
    raw = b'{"workload_uid":"%s","run_id":"r","junk":%s}' % (uid.encode(), junk)
    if path == "/wandb/batch":
        raw = b'{"run":' + raw + b"}"
    r = srv.post_raw(path, raw)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_many_values" and r.json()["field"] == "body"
    assert srv.get(f"/workloads/{uid}").status_code == 404


def test_the_width_bound_is_counted_before_the_parse_and_leaves_legit_bodies_alone():
    junk = b"[" + b",".join([b"1.5"] * (validate.MAX_COMMAS + 10)) + b"]"  # ~8 MB
    raw = b'{"workload_uid":"w","metrics":[],"junk":%s}' % junk
    refused, peak = _refused_with_peak(raw)
    assert refused.status == 413 and peak < len(raw)  # a parse would build ~2M objects
    # 100,000 points with 8 tags each: ~1.2M ","; stored.
    point = '{"name":"m","value":1.5,"step":%d,"tags":{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8}}'
    raw = ('{"workload_uid":"w","metrics":[' + ",".join(point % i for i in range(MAX_POINTS_PER_REQUEST)) + "]}")
    batch = validate.metrics_batch_bytes(raw.encode(), orjson.loads)
    assert len(batch.series["m"]) == MAX_POINTS_PER_REQUEST
