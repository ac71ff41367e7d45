"""Exporters report their health counters with their points; Lens shows them.

The optional ``exporter`` object of a ``/wandb/metrics`` body (or batch part) holds
the cumulative counters of one exporter process.  The server keeps the latest per
(workload, pod, rank), lists them on the workload and sums them on ``/health``,
so a dropped or refused point is visible without access to the training logs.
"""

from __future__ import annotations

import requests

from helpers.server_data import metrics_body


def test_latest_exporter_counters_are_shown_per_process_and_summed_on_health(lens_server):
    srv = lens_server
    uid = "wl-health"
    assert srv.get("/health").json()["exporters"] == {}
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", 1, 1.0)], rank=0,
                                            exporter={"queue_dropped": 5, "rejected_points": 1}))
    # A later report of the same process replaces its earlier one (cumulative counters).
    srv.post("/wandb/metrics", metrics_body(uid, [("loss", 2, 1.0)], rank=0,
                                            exporter={"queue_dropped": 7, "rejected_points": 1}))
    # Rank 1 reports through /wandb/batch; unknown and ill-typed counters are ignored,
    # never a failure of the request.
    part = metrics_body(uid, [("loss", 1, 2.0)], rank=1,
                        exporter={"spool_dropped_points": 3, "queue_dropped": 2, "bad": -1, "worse": "x",
                                  "flag": True, "ratio": 0.5})
    r = srv.post("/wandb/batch", {"metrics": part})
    assert r.status_code == 200, r.text
    # A body whose exporter is not an object stores its points and no report.
    r = srv.post("/wandb/metrics", metrics_body(uid, [("loss", 3, 1.0)], rank=2, exporter=[1, 2]))
    assert r.status_code == 200 and r.json()["inserted"] == 1
    # Another workload counts on /health too.
    srv.post("/wandb/metrics", metrics_body("wl-other", [("loss", 1, 1.0)], exporter={"filtered_points": 4}))

    wl = srv.get(f"/workloads/{uid}").json()
    got = [(e["pod_name"], e["rank"], e["stats"]) for e in wl["exporters"]]
    assert got == [("train-pod-0", 0, {"queue_dropped": 7, "rejected_points": 1}),
                   ("train-pod-0", 1, {"spool_dropped_points": 3, "queue_dropped": 2})]
    assert all(e["reported_at"] > 1e12 for e in wl["exporters"])  # epoch ms, like every time here
    assert srv.get("/health").json()["exporters"] == {"queue_dropped": 9, "rejected_points": 1,
                                                      "spool_dropped_points": 3, "filtered_points": 4}


def test_counters_under_other_names_never_reach_the_open_pages(lens_server):
    """``/health`` and ``/metrics`` answer without a token, so a counter name is one of
    ``limits.EXPORTER_COUNTERS``: a client cannot put a credential (or a million names,
    or three names Prometheus folds into one) on them."""
    srv = lens_server
    secret = "secret_postgresql://u:hunter2@db/x"
    r = srv.post("/wandb/metrics", metrics_body("wl-names", [("loss", 1, 1.0)],
                                                exporter={secret: 5, "a-b": 1, "a.b": 2, "a_b": 3,
                                                          "queue_dropped": 4}))
    assert r.status_code == 200 and r.json()["inserted"] == 1, r.text
    assert srv.get("/health").json()["exporters"] == {"queue_dropped": 4}
    page = requests.get(srv.url + "/metrics", timeout=30).text  # open: no token
    assert "hunter2" not in page and "lens_exporter_a_b" not in page
    assert "lens_exporter_queue_dropped 4.0" in page
    stats = srv.get("/workloads/wl-names").json()["exporters"][0]["stats"]
    assert stats == {"queue_dropped": 4}


def test_the_sums_of_the_largest_counters_stay_a_64_bit_integer(lens_server):
    """Three exporters at the largest counter each: the sum saturates at 2^63-1 instead
    of breaking ``/health`` (a 500 whose JSON cannot hold the integer, until an admin
    deleted the workload) and with it every probe that polls it."""
    srv = lens_server
    big = 2**63 - 1
    for rank in range(3):
        r = srv.post("/wandb/metrics", metrics_body("wl-big", [("loss", 1, 1.0)], rank=rank,
                                                    exporter={"queue_dropped": big, "spooled_points": 1}))
        assert r.status_code == 200, r.text
    h = srv.get("/health")
    assert h.status_code == 200, h.text
    assert h.json()["exporters"] == {"queue_dropped": big, "spooled_points": 3}
    assert requests.get(srv.url + "/metrics", timeout=30).status_code == 200


def test_every_counter_the_exporter_reports_is_one_the_server_keeps(tmp_path):
    """The exporter's ``exporter`` object (the recorder's counters and the HTTP sink's) uses
    only names the server keeps: a counter added on one side and not in
    ``limits.EXPORTER_COUNTERS`` fails here instead of vanishing from ``/health``."""
    from primus_lens_wandb_exporter.core.recorder.stats import Counters
    from primus_lens_wandb_exporter.limits import EXPORTER_COUNTERS
    from primus_lens_wandb_exporter.sinks.http import HttpSink
    from primus_lens_wandb_exporter.sinks.spool import Spool

    sink = HttpSink("http://127.0.0.1:9", spool=Spool(str(tmp_path / "spool")))
    assert set(sink.exporter_counters(Counters().exporter())) == EXPORTER_COUNTERS
