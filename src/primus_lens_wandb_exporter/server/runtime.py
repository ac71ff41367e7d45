"""What the routes and middlewares of one app share: one :class:`Runtime` on ``app.state.runtime``.

Created by :func:`.app.create_app`, started and stopped by its lifespan.  Routes reach it
as ``request.app.state.runtime``; nothing of it lives in a module global, so two apps in
one process (the tests build many) share nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ..core.config import parse_value as parse_env
from . import ingest

#: metrics/data answers without max_points streamed at once per process; one more is
#: answered 503 with Retry-After (each holds a database connection while it streams).
MAX_STREAMS = 4
#: Bytes of ingest bodies held at once per process (read, queued or being processed;
#: a body without Content-Length counts as MAX_BODY_BYTES).  A request that would
#: exceed it is answered 503 + Retry-After before its body is read, so concurrent
#: large requests cannot grow memory without bound.
MAX_INGEST_INFLIGHT_BYTES = 256 * 1024 * 1024
#: Seconds a streamed answer waits for its client to take more before it gives up and frees its
#: slot: four clients that asked and stopped reading held every slot for as long as their sockets
#: stayed open.  A reader slower than ~1 MB in this time is cut off too (routes/stream.py says why).
STREAM_STALL_SECONDS = 120.0

log = logging.getLogger("primus_lens.server")


def _env_number(name: str, default, cast=float):
    """A positive number from the environment variable ``name``; ``default`` (with one warning
    line naming the variable) when it is unset, not a number, not finite or not positive."""
    raw = os.environ.get(name)
    if not raw:
        return default
    # The exporter's parser of its own variables: a number, finite, else a problem.
    value, problem = parse_env(name, "int" if cast is int else "float", raw, default)
    if problem is None and value > 0:
        return value
    log.warning("%s=%r is not a positive number: using %s", name, raw, default)
    return default


class Runtime:
    """The app's store and settings, and the state its requests share: the ingest
    writer and admission, the stream slots, the ``--workers`` counters, retention."""

    def __init__(self, settings, store):
        self.settings = settings
        self.store = store
        self.shared = None
        if settings.stats_dir:
            from .shared_stats import SharedStats

            self.shared = SharedStats(settings.stats_dir, store.stats)
        from . import ops

        self.retention = ops.Retention(store, settings.retention_days) if settings.retention_days else None
        if settings.rollup_tails is not None:
            store.keep_rollup_tails(settings.rollup_tails)
        # The ingest POSTs: parsed, validated and group-committed by writer threads (ingest.py).
        shared = self.shared
        self.writer = ingest.IngestWriter(store, after_commit=shared.write if shared is not None else None)
        # The environment variable exists for tests and unusual deployments (documented in docs/server.md).
        self.ingest = ingest.IngestPath(self.writer, settings.max_body_bytes,
                                        _env_number("PRIMUS_LENS_INGEST_INFLIGHT_BYTES", MAX_INGEST_INFLIGHT_BYTES, int))
        # Streamed metrics/data answers: each runs in one of MAX_STREAMS threads (routes/stream.py).
        self.stream_slots = threading.BoundedSemaphore(MAX_STREAMS)
        self.stream_pool = ThreadPoolExecutor(MAX_STREAMS, thread_name_prefix="lens-stream")
        self.stream_stall_s = _env_number("PRIMUS_LENS_STREAM_STALL_SECONDS", STREAM_STALL_SECONDS)

    def start(self) -> None:
        if self.shared is not None:
            self.shared.start()
        if self.retention is not None:
            self.retention.start()

    def stop(self) -> None:
        # Every request uvicorn drained was answered, so its group is committed; this
        # only stops the writer threads (after anything still queued).
        self.writer.close()
        if self.retention is not None:
            self.retention.stop()
        # Runs after uvicorn drained in-flight requests on SIGTERM/SIGINT.
        if self.shared is not None:
            self.shared.stop()
        self.store.close()
