"""The collector settings of a server process (``serve`` and each ``--workers`` process)."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Collect rarely, and never rescan the start-up objects.

    An ingest request allocates tens of thousands of small containers (parsed
    points, row tuples); CPython's default gen-0 threshold (700) then runs the
    collector dozens of times per request.  Nothing here builds reference cycles
    at that rate.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
