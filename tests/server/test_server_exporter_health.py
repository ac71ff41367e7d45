"""Exporters report their health counters with their points; Lens shows them.

The optional ``exporter`` object of a ``/wandb/metrics`` body (or batch part) holds
the cumulative counters of one exporter process.  The server keeps the latest per
(workload, pod, rank), lists them on the workload and sums them on ``/health``,
so a dropped or refused point is visible without access to the training logs.
"""

from __future__ import annotations

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
