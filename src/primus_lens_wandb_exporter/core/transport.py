"""HTTP sink to the Lens API: keep-alive session, timeouts, backoff with jitter,
``Retry-After``, bearer token, and the spool for whatever cannot be delivered.

Runs its own sender thread so a slow or unreachable server never holds up the
Recorder's worker, let alone the training thread.  While Lens is down, new batches
go straight to the spool and one probe every few seconds replays the oldest spool
file; once a probe succeeds the whole spool is replayed.
"""

import collections
import json
import logging
import os
import random
import threading
import time
from typing import Optional

from .hookspecs import hookimpl

try:  # ~6x faster than the stdlib encoder: the worker's largest cost per point
    import orjson

    def _encode(payload) -> bytes:
        return orjson.dumps(payload)
except ImportError:  # pragma: no cover - orjson is a dependency, this is a safety net
    def _encode(payload) -> bytes:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
from .log import get_logger, log_once
from .spool import Spool

ENDPOINT_METRICS = "/wandb/metrics"
ENDPOINT_DETECTION = "/wandb/detection"
ENDPOINT_RUN = "/wandb/run"

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 5.0
_PROBE_INTERVAL = 2.0


class HttpSink:
    """Delivers request bodies to ``{base}{endpoint}``; spools on failure."""

    def __init__(self, base_url: str, token: Optional[str] = None, timeout: float = 5.0, max_retries: int = 8,
                 spool: Optional[Spool] = None, queue_limit: int = 64):
        import requests  # imported here: only the worker thread ever builds a sink

        self.base_url = base_url.rstrip("/")
        self.timeout = (min(3.0, timeout), timeout)
        self.max_retries = max_retries
        self.spool = spool or Spool()
        self.rejected = Spool(os.path.join(self.spool.directory, "rejected"), max(1, self.spool.max_bytes // 8))
        self.session = requests.Session()
        self.session.headers["Content-Type"] = "application/json"
        self.session.headers["User-Agent"] = "primus-lens-wandb-exporter"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self._requests = requests
        self._queue = collections.deque()
        self._queue_limit = queue_limit
        self._cond = threading.Condition()
        self._inflight = None
        self._flush_deadline = None
        self._flush_replayed = True
        # Files left by an earlier process are replayed by this one.
        self._spool_pending = bool(self.spool.files())
        self.down = False
        self._next_probe = 0.0
        self._thread = None
        self.counters = {"sent_batches": 0, "sent_points": 0, "retries": 0, "failed_attempts": 0,
                         "spooled_batches": 0, "spooled_points": 0, "replayed_batches": 0,
                         "replayed_points": 0, "rejected_batches": 0, "rejected_points": 0}
        self.last_error = None

    # -------------------------------------------------------------- producer side
    def submit(self, endpoint: str, payload: dict, points: int = 0):
        body = _encode(payload)
        with self._cond:
            if self.down and time.monotonic() < self._next_probe or len(self._queue) >= self._queue_limit:
                # Lens is down or we are far behind: persist now rather than hold memory.
                self._spool(endpoint, payload, points, body)
                self._ensure_thread()
                self._cond.notify()
                return
            self._queue.append((endpoint, payload, points, body))
            self._ensure_thread()
            self._cond.notify()

    def flush(self, deadline: float):
        """Deliver what is queued (and try the spool once) until ``deadline``; spool the rest.

        Never waits past the deadline: a request still on the wire then is spooled too.
        """
        with self._cond:
            self._flush_deadline = deadline
            self._flush_replayed = False
            self._ensure_thread()
            self._cond.notify_all()
            while time.monotonic() < deadline:
                busy = self._queue or self._inflight is not None
                if not busy and (self._flush_replayed or not self._spool_pending):
                    break
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            leftovers = list(self._queue)
            self._queue.clear()
            inflight = self._inflight
            self._flush_deadline = None
        for endpoint, payload, points, body in leftovers:
            self._spool(endpoint, payload, points, body)
        if inflight is not None:
            # Still on the wire when time ran out: keep a copy (the upsert makes a double harmless).
            endpoint, payload, points, body = inflight
            self._spool(endpoint, payload, points, body)

    # -------------------------------------------------------------- sender thread
    def _ensure_thread(self):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="primus-lens-http", daemon=True)
            self._thread.start()

    def _next_item(self):
        """Block until there is a request to send (returned) or the spool is due (None)."""
        with self._cond:
            while True:
                if self._queue:
                    item = self._queue.popleft()
                    self._inflight = item
                    return item
                if self._flush_deadline is not None and not self._flush_replayed:
                    self._inflight = ("replay",)
                    return None
                timeout = max(0.05, self._next_probe - time.monotonic()) if self._spool_pending else None
                if not self._cond.wait(timeout) and self._spool_pending and not self._queue:
                    self._inflight = ("replay",)
                    return None

    def _loop(self):
        while True:
            item = self._next_item()
            try:
                if item is None:
                    forced = self._flush_deadline is not None
                    self._replay_spool(force=forced)
                    if forced:
                        self._flush_replayed = True
                    continue
                endpoint, payload, points, body = item
                if self.down and time.monotonic() < self._next_probe:
                    self._spool(endpoint, payload, points, body)
                elif self._send(endpoint, body, points):
                    self._mark_up()
                    if self._spool_pending:
                        self._replay_spool(force=False)
                else:
                    self._spool(endpoint, payload, points, body)
            except Exception as exc:  # the sender thread must survive anything
                log_once(("http-loop", type(exc).__name__), logging.WARNING, "HTTP sink error: %r", exc)
            finally:
                with self._cond:
                    self._inflight = None
                    self._cond.notify_all()

    def _send(self, endpoint: str, body: bytes, points: int, attempts: Optional[int] = None) -> bool:
        """POST with retries; True when Lens acknowledged it (or rejected it for good)."""
        url = self.base_url + endpoint
        attempts = attempts or self.max_retries
        for attempt in range(attempts):
            deadline = self._flush_deadline
            try:
                response = self.session.post(url, data=body, timeout=self.timeout)
            except self._requests.RequestException as exc:
                status, retry_after, detail = None, None, repr(exc)
            else:
                status = response.status_code
                if status < 300:
                    self.counters["sent_batches"] += 1
                    self.counters["sent_points"] += points
                    if endpoint == ENDPOINT_METRICS:
                        get_logger().debug("API report ok: %d points -> %s", points, url)
                    return True
                retry_after = response.headers.get("Retry-After")
                detail = response.text[:300]
                if status not in _RETRY_STATUS:
                    self.counters["rejected_batches"] += 1
                    self.counters["rejected_points"] += points
                    self.last_error = f"HTTP {status}: {detail}"
                    get_logger().error("Lens rejected a %s batch (%d points, counted): HTTP %s %s",
                                       endpoint, points, status, detail)
                    # Kept for inspection (doctor shows the count); never replayed.
                    self.rejected.write(endpoint, {"status": status, "detail": detail}, points, body)
                    return True
            self.counters["failed_attempts"] += 1
            self.last_error = f"HTTP {status}: {detail}" if status else detail
            if attempt == 0:
                log_once(("http-fail", endpoint), logging.WARNING,
                         "Lens API %s unreachable (%s); retrying, then spooling to %s",
                         url, self.last_error, self.spool.directory)
            if attempt + 1 >= attempts:
                break
            delay = _retry_delay(attempt, retry_after)
            if deadline is not None and time.monotonic() + delay >= deadline:
                break
            self.counters["retries"] += 1
            time.sleep(delay)
        self._mark_down()
        return False

    def _mark_up(self):
        if self.down:
            get_logger().info("Lens API reachable again; replaying the spool")
        self.down = False

    def _mark_down(self):
        self.down = True
        self._next_probe = time.monotonic() + _PROBE_INTERVAL

    def _spool(self, endpoint, payload, points, body):
        self._spool_pending = True
        if self.spool.write(endpoint, payload, points, body):
            self.counters["spooled_batches"] += 1
            self.counters["spooled_points"] += points

    def _replay_spool(self, force: bool):
        """Send spooled requests oldest first; stop at the first failure.

        While Lens is down this is the probe: at most one request every few seconds,
        or one at once when ``force`` (a flush is waiting).
        """
        if not force and self.down and time.monotonic() < self._next_probe:
            return
        sent_any = False
        for claimed, record in self.spool.claim():
            if self._flush_deadline is not None and time.monotonic() >= self._flush_deadline:
                self.spool.release(claimed)
                return
            endpoint = record.get("endpoint", ENDPOINT_METRICS)
            points = int(record.get("points") or 0)
            body = _encode(record.get("payload"))
            if self._send(endpoint, body, points, attempts=1 if self.down else 3):
                self.spool.done(claimed)
                self.counters["replayed_batches"] += 1
                self.counters["replayed_points"] += points
                self._mark_up()
                sent_any = True
            else:
                self.spool.release(claimed)
                return
        self._spool_pending = False
        if sent_any:
            get_logger().debug("spool replayed to %s", self.base_url)

    def stats(self):
        out = dict(self.counters)
        out.update({"api_base_url": self.base_url, "down": self.down, "queued": len(self._queue),
                    "last_error": self.last_error})
        out.update(self.spool.stats())
        return out


def _retry_delay(attempt: int, retry_after) -> float:
    if retry_after:
        try:
            return min(60.0, max(0.0, float(retry_after)))
        except ValueError:
            pass
    # Full jitter: spreads the retries of many ranks hitting one server.
    return random.uniform(0.5, 1.5) * min(_BACKOFF_CAP, _BACKOFF_BASE * (2 ** attempt))


_sink = None
_sink_pid = None


def get_sink() -> Optional[HttpSink]:
    """This process's HTTP sink, or None when API reporting is off."""
    global _sink, _sink_pid
    if _sink_pid != os.getpid():
        from .recorder import get_recorder

        cfg = get_recorder().config
        _sink = None
        if cfg.api_reporting:
            spool = Spool(cfg.spool_dir, int(cfg.spool_max_mb * 1024 * 1024))
            _sink = HttpSink(cfg.api_base_url, cfg.api_token, cfg.http_timeout, cfg.max_retries, spool)
        _sink_pid = os.getpid()
    return _sink


@hookimpl
def lens_report_metrics(batch):
    sink = get_sink()
    if sink is not None:
        sink.submit(ENDPOINT_METRICS, batch.to_payload(), len(batch.points))


@hookimpl
def lens_report_detection(detection):
    sink = get_sink()
    if sink is not None:
        sink.submit(ENDPOINT_DETECTION, detection)


@hookimpl
def lens_report_run(run, event):
    sink = get_sink()
    if sink is not None:
        sink.submit(ENDPOINT_RUN, run)


@hookimpl
def lens_flush(deadline):
    sink = get_sink()
    if sink is not None:
        sink.flush(deadline)


@hookimpl
def lens_sink_stats():
    sink = get_sink()
    return {"http": sink.stats() if sink is not None else None}
