"""Delivery of an import through the exporter's own ``HttpSink``, waited for run by run."""

import os
import time
from typing import TYPE_CHECKING, Any, Dict

if TYPE_CHECKING:  # importer.py imports this module
    from .importer import RunResult



class DeliveryError(Exception):
    pass


class Sender:
    """Delivery through the exporter's own ``HttpSink`` (its checks against limits.py,
    retries with backoff, ``Retry-After``, token), waited for run by run.

    The sink spools what it cannot deliver; here that spool is a private directory, so an
    import never leaves work for another process: whatever is still in it after a wait was
    not delivered, the run is reported as failed, and importing again is the remedy (the
    source file is still there; points are upserted).  Accepted / rejected / filtered are
    the sink's own counters, so they count exactly what the sink learnt from Lens.
    """

    def __init__(self, config):
        import tempfile

        from ..sinks.spool import Spool
        from ..sinks.http import HttpSink

        self.directory = tempfile.mkdtemp(prefix="primus-lens-import-")
        timeout = max(config.http_timeout, 30.0)  # an import's requests are full batches
        self.sink = HttpSink(config.api_base_url, config.api_token, timeout, config.max_retries,
                             Spool(self.directory, 1 << 40))
        # Long enough for every retry of one request; a down server ends the wait sooner.
        self.wait = max(60.0, config.max_retries * (timeout + 5.0))
        self.unsettled = 0
        self.base: Dict[str, int] = {}
        self.submitted = 0

    def begin(self):
        self.base = dict(self.sink.counters)
        self.submitted = 0

    def submit(self, endpoint: str, payload: Dict[str, Any], points: int = 0):
        self.sink.submit(endpoint, payload, points)
        self.submitted += points
        self.unsettled += 1
        if self.unsettled >= 16:  # bounded memory and spool: let the sender catch up
            self.settle()

    def settle(self):
        self.sink.flush(time.monotonic() + self.wait)
        self.unsettled = 0

    def undelivered(self) -> int:
        """Requests still in the private spool (queued, written ahead or kept)."""
        try:
            return sum(1 for e in os.scandir(self.directory) if e.is_file() and ".json" in e.name
                       and not e.name.startswith("."))
        except OSError:
            return 0

    def end(self, res: "RunResult"):
        """Wait for the run's requests and put what Lens did with them into ``res``."""
        self.settle()
        c = self.sink.counters
        delta = {k: c.get(k, 0) - self.base.get(k, 0) for k in c}
        filtered, ok, rejected = (delta.get("filtered_points", 0), delta.get("sent_points", 0),
                                  delta.get("rejected_points", 0))
        left = self.undelivered()
        # Points in answered requests (ok) include those Lens refused one by one; the rest
        # of the rejected points were in requests refused as a whole.
        whole = max(0, self.submitted - filtered - ok) if not left else 0
        res.filtered += filtered
        res.rejected += rejected
        res.accepted += max(0, ok - max(0, rejected - whole))
        res.sent -= filtered
        if left:
            res.failed = max(0, self.submitted - filtered - ok - rejected)
            raise DeliveryError(f"Lens API {self.sink.base_url} unreachable ({self.sink.last_error}); "
                                f"{left} requests not delivered: run the import again (it is idempotent)")
        if delta.get("rejected_batches", 0) and not rejected:
            raise DeliveryError(f"Lens refused the run/detection report ({self.sink.last_error})")

    def close(self):
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)
