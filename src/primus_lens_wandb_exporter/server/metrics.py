"""Prometheus ``/metrics`` for the Lens server, with ``prometheus_client``.

Exposed:

* ``lens_http_requests_total{method,route,status}`` and
  ``lens_http_request_duration_seconds{method,route}``: every request, labelled
  by its route *template* (``/api/v1/workloads/{uid}``), never the raw path, so
  workload ids do not multiply the series; unmatched paths are ``route="other"``.
* ``lens_storage_<counter>_total``: the storage counters of ``/health``
  (``ingest_transactions``, ``points_inserted``, ``ingest_retries``, SQLite
  checkpoints ...), summed over the processes of ``serve --workers N``.
* ``lens_exporter_<counter>``: the exporters' health counters as ``/health``
  adds them up (latest report of every exporter process; read from the database,
  absent while it is down).

With ``serve --workers N`` every process answers ``/metrics`` for all of them:
``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` for its workers, whose request
counters go to files there that ``MultiProcessCollector`` adds up; the storage
counters come from the workers' shared counter files (see :mod:`.shared_stats`).
"""

from __future__ import annotations

import logging
import os
import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("primus_lens.server")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _metric_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


class _StorageCollector:
    """The counters of ``/health`` at scrape time (already summed over workers)."""

    def __init__(self, store, shared):
        self.store = store
        self.shared = shared

    def collect(self):
        totals = self.shared.snapshot()[0] if self.shared is not None else self.store.stats()
        for key, value in sorted(totals.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                c = CounterMetricFamily(f"lens_storage_{_metric_name(key)}", f"storage counter {key} (see /health)")
                c.add_metric([], value)
                yield c
        try:
            exporters = self.store.exporter_totals()
        except Exception as e:  # database down: the request metrics still answer
            log.warning("/metrics: exporter counters unavailable: %s", e)
            exporters = {}
        for key, value in sorted(exporters.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                g = GaugeMetricFamily(f"lens_exporter_{_metric_name(key)}",
                                      f"exporter counter {key}, summed over the latest report of every exporter")
                g.add_metric([], value)
                yield g


class PrometheusMetrics:
    """The metric objects and the registry ``/metrics`` serves, for one app."""

    def __init__(self, store, shared):
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        # In multiprocess mode the values live in files, collected below; registering
        # them too would report this process's share twice.
        own = None if self.multiprocess else self.registry
        self.requests = Counter("lens_http_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=own)
        self.latency = Histogram("lens_http_request_duration_seconds", "HTTP request duration",
                                 ["method", "route"], buckets=_BUCKETS, registry=own)
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)
        else:
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=self.registry)
        self.registry.register(_StorageCollector(store, shared))
        self._children: dict = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request.  The labelled children are cached: ``labels()`` costs
        more than the increment itself, and this runs on every ingest request."""
        key = (method, route, status)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = (self.requests.labels(method, route, str(status)).inc,
                                        self.latency.labels(method, route).observe)
        c[0]()
        c[1](seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def install(app, store, shared) -> PrometheusMetrics:
    """Add ``GET /metrics`` to ``app``; return the metrics, whose ``observe`` the
    ASGI layer (:mod:`.middleware`) calls for every request, refused ones (401 ...) too."""
    from fastapi.responses import Response

    metrics = PrometheusMetrics(store, shared)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics (open, like /health)",
             response_class=Response)
    def prometheus_metrics():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return metrics
