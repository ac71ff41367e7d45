"""The HTTP sink against the real Lens server: per-point answers, limits, splitting."""

import time

import pytest

from helpers.exporter import get_json, wait_for

from primus_lens_wandb_exporter import limits
from primus_lens_wandb_exporter.sinks.spool import Spool
from primus_lens_wandb_exporter.sinks.http import HttpSink


def _payload(uid, points):
    return {"source": "wandb", "workload_uid": uid, "pod_name": f"{uid}-pod-0", "run_id": "r", "rank": 0,
            "timestamp": time.time(), "metrics": points}


def _sink(server, tmp_path, **kwargs):
    return HttpSink(server.api, spool=Spool(str(tmp_path / "spool")), **kwargs)


def test_points_lens_refuses_one_by_one_are_counted_and_the_rest_is_stored(lens_server, tmp_path, caplog):
    sink = _sink(lens_server, tmp_path)
    now = time.time()
    # A timestamp is the one field the exporter does not check itself: only Lens can refuse it.
    points = [{"name": "good", "value": float(i), "step": i, "timestamp": now} for i in range(5)]
    points += [{"name": "bad", "value": 1.0, "step": i, "timestamp": -1.0} for i in range(3)]
    sink.submit_metrics(_payload("perpoint", points))
    sink.flush(time.monotonic() + 30)
    assert sink.counters["rejected_points"] == 3 and sink.counters["rejected_batches"] == 0
    data = get_json(lens_server, "/api/v1/workloads/perpoint/metrics/data", data_source="wandb", metrics="good")
    assert sorted(p["iteration"] for p in data["data"]) == [0, 1, 2, 3, 4]
    assert not Spool(str(tmp_path / "spool" / "rejected")).files()


def test_points_over_the_limits_are_filtered_before_sending(lens_server, tmp_path):
    sink = _sink(lens_server, tmp_path)
    now = time.time()
    points = [{"name": "ok", "value": 1.0, "step": 1, "timestamp": now},
              {"name": "ok", "value": 2.0, "step": float("nan"), "timestamp": now},
              {"name": "ok", "value": 3.0, "step": limits.MAX_ABS_STEP * 2, "timestamp": now},
              {"name": "ok", "value": 4.0, "step": 2, "timestamp": now}]
    sink.submit_metrics(_payload("limits", points))
    sink.flush(time.monotonic() + 30)
    assert sink.counters["filtered_points"] == 2
    assert sink.counters["sent_points"] == 2 and sink.counters["rejected_batches"] == 0


def test_a_batch_over_the_point_limit_is_split_into_requests_lens_accepts(lens_server, tmp_path):
    # max_points defaults to the server's limit (the exporter passes PRIMUS_LENS_BATCH_SIZE); a
    # 100,000-point request takes seconds on a loaded machine, hence the long timeout.
    sink = _sink(lens_server, tmp_path, timeout=120)
    now = time.time()
    n = limits.MAX_POINTS_PER_REQUEST + 10
    sink.submit_metrics(_payload("split", [{"name": f"k{i}", "value": 1.0, "step": 0, "timestamp": now}
                                           for i in range(n)]))
    sink.flush(time.monotonic() + 300)
    assert sink.counters["sent_points"] == n and sink.counters["sent_batches"] == 2
    assert sink.counters["rejected_batches"] == 0
    body = get_json(lens_server, "/api/v1/workloads/split/metrics/available", data_source="wandb")
    assert len(body["metrics"]) == n
