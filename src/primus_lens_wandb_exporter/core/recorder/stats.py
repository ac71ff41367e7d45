"""Counters of everything dropped, filtered, retried or failed, and the stats file doctor reads."""

import os
import re
import time
from typing import Any, Dict

from .. import normalize
from ...limits import MAX_VALUE_DEPTH
from ...sinks import OFF_STATS
from ..log import get_logger
from .records import RECORD_WIDTH, _time


class Counters:
    """Every drop, filter, retry and error is counted (``primus-lens doctor``)."""

    def __init__(self):
        self.log_calls = 0
        self.points = 0
        self.batches = 0
        self.filtered = 0
        self.dropped_queue_full = 0
        self.dropped_stale_step = 0
        self.worker_errors = 0
        self.detections = 0

    def as_dict(self):
        return dict(vars(self))

    def exporter(self) -> Dict[str, int]:
        """The recorder's counters in the SPEC's ``exporter`` object (names as Lens shows them)."""
        return {"queue_dropped": self.dropped_queue_full, "filtered_points": self.filtered,
                "stale_step_dropped": self.dropped_stale_step, "worker_errors": self.worker_errors}


class Stats:
    """The recorder's stats: ``stats()``, the stats file, and a sink's "write it soon" (mixin of Recorder)."""

    def stats(self) -> Dict[str, Any]:
        out = {"recorder": self.counters.as_dict(), "queue_length": len(self._queue) // RECORD_WIDTH}
        out.update(OFF_STATS)
        for sink in self._sinks or ():
            try:
                out[sink.name] = sink.stats()
            except Exception as exc:
                self._error("sink stats", exc)
        if self._pm is not None:
            from ..registry import call_safely

            for result in call_safely(self._pm.hook.lens_sink_stats):
                out.update(result)
        return out

    def request_stats(self):
        """Write the stats file soon (a sink saw a problem doctor must show, e.g. a full spool)."""
        self._stats_written = float("-inf")

    def _write_stats(self):
        """Counters where ``primus-lens doctor`` finds them.

        In ``<spool dir>/stats`` and, always, in a small directory outside the spool
        (``spool.stats_fallback_dir``, /dev/shm): a full or read-only spool is exactly when
        doctor must still read the counts of what was lost.
        """
        from ...sinks.spool import default_spool_dir, stats_fallback_dir, write_file_atomic

        self._stats_written = time.monotonic()
        try:
            import json

            spool_dir = self.config.spool_dir or default_spool_dir()
            stats = self.stats()
            stats.update({"pid": os.getpid(), "workload_uid": self.identity.workload_uid,
                          "pod_name": self.identity.pod_name, "written_at": _time(), "spool_dir": spool_dir})
            data = json.dumps(stats, default=str).encode()
        except (OSError, TypeError, ValueError) as exc:
            get_logger().debug("could not build stats: %r", exc)
            return
        # File names hold 255 bytes; a workload uid may have 256 characters (and any of them).
        uid = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.identity.workload_uid[:100])
        name = f"{uid}-{os.getpid()}.json"
        for directory in (os.path.join(spool_dir, "stats"), stats_fallback_dir(spool_dir)):
            if directory is None:
                continue
            try:
                write_file_atomic(os.path.join(directory, name), data)
            except OSError as exc:
                get_logger().debug("could not write stats to %s: %r", directory, exc)


def _jsonable(value, depth=0):
    """A JSON-safe copy of config/summary values (non-JSON leaves become strings; NUL or a lone
    surrogate in a string, key or value, becomes U+FFFD: either would refuse the whole report)."""
    if depth > MAX_VALUE_DEPTH:  # the server refuses bodies deeper than limits.MAX_JSON_DEPTH
        return _wire_text(str(value))
    if isinstance(value, dict):
        return {_wire_text(str(k)): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, float):
        return normalize.wire_value(value)
    if isinstance(value, str):
        return _wire_text(value)
    if value is None or isinstance(value, (int, bool)):
        return value
    number = normalize.to_float(value)
    if number is not None:
        return normalize.wire_value(number)
    return _wire_text(str(value))


def _wire_text(text: str) -> str:
    """``text`` as the server takes it: U+FFFD for NUL (PostgreSQL cannot hold it) and for a
    lone surrogate (``os.environ`` gives them for undecodable bytes; no JSON encoder takes one)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii() and _SURROGATE.search(text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # pairs stay whole
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")
