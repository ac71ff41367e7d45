"""HTTP sink to the Lens API: keep-alive session, timeouts, backoff with jitter,
``Retry-After``, bearer token, and the spool for whatever cannot be delivered.

Runs its own sender thread so a slow or unreachable server never holds up the
Recorder's worker, let alone the training thread.  While Lens is down (or refuses our
token), new batches go straight to the spool and one probe every few seconds replays
the oldest spool file; once a probe succeeds the whole spool is replayed.

Bounded loss window: a batch not acknowledged ``WRITE_AHEAD`` seconds after it was
handed to the sink is written to the spool *while it is still being sent* (a file born
claimed by this process, see ``Spool.write_claimed``), by a small spool thread -- not
after all retries, and never on the training thread.  A SIGKILL then loses at most the
points of the last flush interval plus that delay (measured: benchmarks/bench_loss_window.py).

Requests obey the server's limits (``limits.py``): points whose step or row Lens would
refuse are filtered and counted (``filtered_points``), and a batch is split under
``MAX_POINTS_PER_REQUEST`` and ``MAX_BODY_BYTES``; points Lens refuses one by one
(its ``rejected`` answer) are counted in ``rejected_points``.  Each cause is logged once.
"""

import collections
import json
import logging
import os
import random
import re
import threading
import time
from itertools import repeat
from typing import Optional

from .. import limits
from .hookspecs import hookimpl

try:  # ~6x faster than the stdlib encoder: the worker's largest cost per point
    import orjson

    def _encode(payload) -> bytes:
        return orjson.dumps(payload)

    _decode = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency, this is a safety net
    def _encode(payload) -> bytes:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()

    _decode = json.loads
from .log import get_logger, log_once
from .spool import Spool

ENDPOINT_METRICS = "/wandb/metrics"
ENDPOINT_DETECTION = "/wandb/detection"
ENDPOINT_RUN = "/wandb/run"

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
# Lens refuses who we are, not what we send: kept and replayed once it accepts again.
_AUTH_STATUS = {401, 403}
_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 5.0
_PROBE_INTERVAL = 2.0
#: Seconds a batch may wait undelivered (queued or on the wire) before it is written ahead.
WRITE_AHEAD = 0.25


class _Item:
    """One request: in the queue, on the wire, or replayed from the spool file ``path``."""

    __slots__ = ("endpoint", "payload", "points", "body", "submitted", "path", "finished", "replay",
                 "ahead_failed")

    def __init__(self, endpoint, payload, points, body, path=None, replay=False):
        self.endpoint = endpoint
        self.payload = payload
        self.points = points
        self.body = body
        self.submitted = time.monotonic()
        self.path = path  # a spool file claimed by this process that holds this request
        self.finished = False  # delivered, rejected or handed to the spool: nothing left to persist
        self.replay = replay
        self.ahead_failed = False  # the write-ahead was refused by the disk: not retried in a loop


class HttpSink:
    """Delivers request bodies to ``{base}{endpoint}``; spools on failure."""

    def __init__(self, base_url: str, token: Optional[str] = None, timeout: float = 5.0, max_retries: int = 8,
                 spool: Optional[Spool] = None, queue_limit: int = 64,
                 max_points: int = limits.MAX_POINTS_PER_REQUEST, write_ahead: float = WRITE_AHEAD):
        import requests  # imported here: only the worker thread ever builds a sink

        self.base_url = base_url.rstrip("/")
        self.timeout = (min(3.0, timeout), timeout)
        self.max_retries = max_retries
        self.spool = spool or Spool()
        self.rejected = Spool(os.path.join(self.spool.directory, "rejected"), max(1, self.spool.max_bytes // 8))
        self.max_points = max(1, min(int(max_points), limits.MAX_POINTS_PER_REQUEST))
        self.max_body = limits.MAX_BODY_BYTES
        self.write_ahead = write_ahead
        self.session = requests.Session()
        self.session.headers["Content-Type"] = "application/json"
        self.session.headers["User-Agent"] = "primus-lens-wandb-exporter"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self._requests = requests
        self._queue = collections.deque()
        self._queue_limit = queue_limit
        self._cond = threading.Condition()
        # Serialises "persist this item" with "this item is finished" (spool thread vs sender).
        self._persist_lock = threading.Lock()
        self._inflight = None
        self._flush_deadline = None
        self._flush_replayed = True
        # A flush that waited its whole deadline and nothing got through since: the next
        # one (wandb.finish, then the exit handler) does not wait a second deadline.
        self._flush_gave_up = False
        # Files left by an earlier process are replayed by this one.
        self._spool_pending = bool(self.spool.files())
        self.down = False
        self.auth_refused = None  # the HTTP status while Lens refuses our token
        self._next_probe = 0.0
        self._thread = None
        self._spool_thread = None
        self.counters = {"sent_batches": 0, "sent_points": 0, "retries": 0, "failed_attempts": 0,
                         "spooled_batches": 0, "spooled_points": 0, "replayed_batches": 0,
                         "replayed_points": 0, "rejected_batches": 0, "rejected_points": 0,
                         "filtered_points": 0, "auth_rejected_batches": 0, "auth_rejected_points": 0,
                         "written_ahead_batches": 0, "split_requests": 0}
        self.last_error = None
        # For the ``exporter`` report: the envelope (workload, pod, rank ...) and recorder
        # counters of the last metrics batch, and the report Lens last acknowledged.
        self._envelope = None
        self._base_exporter = {}
        self._delivered_exporter = None

    # -------------------------------------------------------------- producer side
    def report_metrics(self, payload: dict):
        """A batch from the recorder: gains this sink's counters (SPEC ``exporter``), then is sent."""
        self._base_exporter = payload.get("exporter") or {}
        self._envelope = {k: v for k, v in payload.items() if k not in ("metrics", "exporter", "batch_id")}
        payload["exporter"] = self.exporter_counters(self._base_exporter)
        self.submit_metrics(payload)

    def _report_health(self):
        """At a flush: counters that changed since Lens last acknowledged them go in a point-less
        metrics request, so the final counts (a full spool's losses ...) reach Lens even when no
        batch follows them."""
        if self._envelope is None:
            return
        current = self.exporter_counters(self._base_exporter)
        if current == self._delivered_exporter:
            return
        payload = dict(self._envelope, timestamp=time.time(), metrics=[], exporter=current)
        self._enqueue(_Item(ENDPOINT_METRICS, payload, 0, _encode(payload)))

    def submit_metrics(self, payload: dict):
        """A metrics batch: filtered against the server's limits, split under them, queued."""
        points = self._check_points(payload.get("metrics") or [])
        if not points:
            return
        for chunk in _chunks(points, self.max_points):
            part = dict(payload)
            part["metrics"] = chunk
            if len(chunk) != len(points):
                part["batch_id"] = "%s-%d" % (payload.get("batch_id", ""), self.counters["split_requests"])
                self.counters["split_requests"] += 1
            self._submit_sized(ENDPOINT_METRICS, part, len(chunk))

    def submit(self, endpoint: str, payload: dict, points: int = 0):
        if endpoint == ENDPOINT_METRICS:
            self.submit_metrics(payload)
        elif endpoint == ENDPOINT_RUN:
            self._submit_sized(endpoint, payload, points)
        else:
            self._enqueue(_Item(endpoint, payload, points, _encode(payload)))

    def _submit_sized(self, endpoint, payload, points):
        body = _encode(payload)
        if len(body) <= self.max_body:
            self._enqueue(_Item(endpoint, payload, points, body))
            return
        if endpoint == ENDPOINT_METRICS and len(payload["metrics"]) > 1:
            # Over the byte limit (long names, many keys): halves until each part fits.
            half = len(payload["metrics"]) // 2
            for chunk in (payload["metrics"][:half], payload["metrics"][half:]):
                part = dict(payload)
                part["metrics"] = chunk
                part["batch_id"] = "%s-%d" % (payload.get("batch_id", ""), self.counters["split_requests"])
                self.counters["split_requests"] += 1
                self._submit_sized(endpoint, part, len(chunk))
            return
        if endpoint == ENDPOINT_RUN:
            # A run whose config/summary alone exceeds the limit: the run is still recorded,
            # without them, and said so once.
            log_once(("oversize", endpoint), logging.WARNING,
                     "run %s: config/summary of %d bytes exceed Lens's %d-byte request limit; the run is "
                     "reported without them", payload.get("run_id"), len(body), self.max_body)
            slim = dict(payload, config={"_primus_lens_omitted": "config over the request size limit"},
                        summary={})
            self._enqueue(_Item(endpoint, slim, points, _encode(slim)))
            return
        self.counters["rejected_batches"] += 1
        log_once(("oversize", endpoint), logging.ERROR, "a %s request of %d bytes exceeds Lens's limit "
                 "(%d bytes); not sent (counted in rejected_batches)", endpoint, len(body), self.max_body)

    def _check_points(self, points):
        """Points Lens would refuse are filtered here (counted, one log line per cause)."""
        if _all_fine(points):
            return points
        bad = None
        top = limits.MAX_ABS_STEP
        top_row = limits.MAX_ROW
        for index, point in enumerate(points):
            step = point.get("step", 0)
            row = point.get("row")
            try:
                ok = -top <= step <= top and type(step) is not bool  # False for NaN, ±Inf
                if ok and row is not None:
                    ok = type(row) is int and 0 <= row <= top_row
            except TypeError:
                ok = False
            if not ok:
                if bad is None:
                    bad = []
                bad.append(index)
                cause = "step" if not _finite_step(step, top) else "row"
                log_once(("filtered-point", cause), logging.WARNING,
                         "metric %r: %s %r is outside what Lens accepts (a finite number, |step| <= %g; "
                         "row 0..%d); such points are not sent (counted in filtered_points; one line per cause)",
                         point.get("name"), cause, step if cause == "step" else row, top, top_row)
        if bad is None:
            return points
        self.counters["filtered_points"] += len(bad)
        skip = set(bad)
        return [p for i, p in enumerate(points) if i not in skip]

    def _enqueue(self, item):
        with self._cond:
            # While Lens is down (or refuses our token) everything goes straight to disk: the
            # spool replay is the probe that finds it back.  Far behind: persist, not hold memory.
            keep = self.down or len(self._queue) >= self._queue_limit
            if not keep:
                self._queue.append(item)
            self._ensure_threads()
            self._cond.notify_all()
        if keep:
            # Lens is down or we are far behind: persist now (this worker thread) rather than hold memory.
            self._keep(item)

    def flush(self, deadline: float):
        """Deliver what is queued (and try the spool once) until ``deadline``; persist the rest.

        Never waits past the deadline: what is still queued or on the wire then is written
        to the spool (claimed by this process: if it lives on, its sender still delivers
        them; if it exits, the next process replays them).  A flush that already waited its
        whole deadline for a server that has not answered since returns at once.
        """
        try:
            self._report_health()
        except Exception as exc:  # a report must never stand in the way of the flush
            log_once(("health-report", type(exc).__name__), logging.WARNING, "exporter report failed: %r", exc)
        with self._cond:
            self._flush_deadline = deadline
            self._flush_replayed = False
            self._ensure_threads()
            self._cond.notify_all()
            while time.monotonic() < deadline:
                busy = self._queue or self._inflight is not None
                if not busy and (self._flush_replayed or not self._spool_pending):
                    break
                if self._flush_gave_up and self._inflight is not None:
                    break  # still stuck on the request the last flush waited for
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            leftovers = list(self._queue)
            inflight = self._inflight
            self._flush_deadline = None
            self._flush_gave_up = bool(leftovers) or isinstance(inflight, _Item)
        unsaved = [item for item in leftovers + ([inflight] if isinstance(inflight, _Item) else [])
                   if not self._persist(item)]
        if unsaved:
            # Neither delivered nor on disk (full or read-only spool): gone when the process
            # exits, so counted as lost now, and out of the queue so they are counted once.
            with self._cond:
                for item in unsaved:
                    try:
                        self._queue.remove(item)
                    except ValueError:
                        pass
            for item in unsaved:
                self._keep(item)

    # -------------------------------------------------------------- threads
    def _ensure_threads(self):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="primus-lens-http", daemon=True)
            self._thread.start()
        if self.write_ahead is not None and (self._spool_thread is None or not self._spool_thread.is_alive()):
            self._spool_thread = threading.Thread(target=self._write_ahead_loop, name="primus-lens-spool",
                                                  daemon=True)
            self._spool_thread.start()

    def _write_ahead_loop(self):
        """Persist every batch that waits longer than ``write_ahead`` seconds (queued or on the wire)."""
        while True:
            try:
                with self._cond:
                    due = []
                    wait = None
                    now = time.monotonic()
                    candidates = list(self._queue)
                    inflight = self._inflight
                    # The sender stuck on a request (a hanging server): what queues behind it
                    # is written at once, not write_ahead seconds later.
                    stuck = isinstance(inflight, _Item) and inflight.submitted + self.write_ahead <= now
                    if isinstance(inflight, _Item):
                        candidates.append(inflight)
                    for item in candidates:
                        if item.path is not None or item.finished or item.ahead_failed:
                            continue
                        left = 0.0 if stuck else item.submitted + self.write_ahead - now
                        if left <= 0:
                            due.append(item)
                        elif wait is None or left < wait:
                            wait = left
                    if not due:
                        self._cond.wait(wait)
                        continue
                for item in due:
                    if not self._persist(item):
                        item.ahead_failed = True
            except Exception as exc:  # this thread must survive anything
                log_once(("spool-loop", type(exc).__name__), logging.WARNING, "spool thread error: %r", exc)
                time.sleep(0.1)

    def _persist(self, item) -> bool:
        """Write ``item`` to the spool as claimed by us, unless it is already on disk or finished.

        False when the disk refused it (a write error, counted by the spool)."""
        with self._persist_lock:
            if item.path is not None or item.finished:
                return True
            path = self.spool.write_claimed(item.endpoint, item.payload, item.points, item.body)
            if path is None:
                return False
            item.path = path
            self.counters["written_ahead_batches"] += 1
            return True

    def _finish(self, item):
        """``item`` needs no spool file any more (delivered, or rejected for good)."""
        with self._persist_lock:
            item.finished = True
            if item.path is not None:
                Spool.done(item.path)
                item.path = None

    def _keep(self, item):
        """``item`` was not delivered: hand it to the spool queue (replayed later, counted)."""
        with self._persist_lock:
            if item.finished:
                return
            item.finished = True
            self._spool_pending = True
            if item.path is not None:
                Spool.release(item.path)
                item.path = None
                ok = True
            else:
                ok = self.spool.write(item.endpoint, item.payload, item.points, item.body)
            if ok and not item.replay:
                self.counters["spooled_batches"] += 1
                self.counters["spooled_points"] += item.points

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
                if not self._spool_pending:
                    self._cond.wait()
                    continue
                # Due by the clock, however often new batches wake us in between.
                left = self._next_probe - time.monotonic() if self.down else 0.0
                if left <= 0:
                    self._inflight = ("replay",)
                    return None
                self._cond.wait(max(0.05, left))

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
                if self.down and time.monotonic() < self._next_probe:
                    self._keep(item)
                elif self._deliver(item, self.max_retries):
                    if self._spool_pending:
                        self._replay_spool(force=False)
            except Exception as exc:  # the sender thread must survive anything
                log_once(("http-loop", type(exc).__name__), logging.WARNING, "HTTP sink error: %r", exc)
            finally:
                with self._cond:
                    self._inflight = None
                    self._cond.notify_all()

    # -------------------------------------------------------------- delivery
    def _deliver(self, item, attempts) -> bool:
        """Send ``item``; True when Lens took it (or refused it for good), False when it was kept."""
        outcome = self._post(item, attempts)
        if outcome == "ok":
            self._finish(item)
            self._mark_up()
            return True
        if outcome == "split":
            return True
        if outcome == "rejected":
            return True
        self._keep(item)
        return False

    def _post(self, item, attempts) -> str:
        """POST with retries: ``ok``, ``split``, ``rejected`` (finished here), ``down`` or ``auth``."""
        url = self.base_url + item.endpoint
        for attempt in range(attempts):
            deadline = self._flush_deadline
            try:
                response = self.session.post(url, data=item.body, timeout=self.timeout)
            except self._requests.RequestException as exc:
                status, retry_after, detail = None, None, repr(exc)
            else:
                status = response.status_code
                if status < 300:
                    self.counters["sent_batches"] += 1
                    self.counters["sent_points"] += item.points
                    if item.endpoint == ENDPOINT_METRICS:
                        self._read_answer(response, item.points)
                        if isinstance(item.payload, dict) and "exporter" in item.payload:
                            self._delivered_exporter = item.payload["exporter"]
                        get_logger().debug("API report ok: %d points -> %s", item.points, url)
                    return "ok"
                retry_after = response.headers.get("Retry-After")
                detail = response.text[:300]
                if status in _AUTH_STATUS:
                    self.counters["auth_rejected_batches"] += 1
                    self.counters["auth_rejected_points"] += item.points
                    self.last_error = f"HTTP {status}: {detail}"
                    self.auth_refused = status
                    log_once(("http-auth", status), logging.ERROR,
                             "Lens refused our requests with HTTP %s (%s): check PRIMUS_LENS_API_TOKEN. Batches "
                             "are kept in %s and sent automatically once Lens accepts them (counted in "
                             "auth_rejected_batches; this line is printed once)", status, detail,
                             self.spool.directory)
                    self._mark_down()
                    return "auth"
                if status == 413 and item.endpoint == ENDPOINT_METRICS and item.points > 1:
                    self._split(item)
                    return "split"
                if status not in _RETRY_STATUS:
                    self._reject(item, status, detail)
                    return "rejected"
            self.counters["failed_attempts"] += 1
            self.last_error = f"HTTP {status}: {detail}" if status else detail
            if attempt == 0:
                log_once(("http-fail", item.endpoint), logging.WARNING,
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
        return "down"

    def _read_answer(self, response, points):
        """Count the points Lens refused one by one (``rejected_count``), one log line per cause."""
        try:
            answer = _decode(response.content)
            refused = int(answer.get("rejected_count") or 0)
        except (ValueError, TypeError, AttributeError):
            return
        if refused <= 0:
            return
        self.counters["rejected_points"] += refused
        for entry in answer.get("rejected") or []:
            field = re.sub(r"\[\d+\]", "[]", str(entry.get("field", "")))
            log_once(("point-refused", field, entry.get("error")), logging.WARNING,
                     "Lens refused points (%s: %s), e.g. %s; the rest of each batch is stored (counted in "
                     "rejected_points; one line per cause)", field, entry.get("error"), entry.get("message"))

    def _split(self, item):
        """Lens said 413 (a server with a lower limit than ours): send the batch in halves."""
        metrics = item.payload["metrics"]
        half = len(metrics) // 2
        self.max_points = max(1, min(self.max_points, half))
        self.counters["split_requests"] += 1
        log_once(("http-413", item.endpoint), logging.WARNING,
                 "Lens answered 413 to a %d-point batch; sending at most %d points per request",
                 len(metrics), self.max_points)
        parts = []
        for index, chunk in enumerate((metrics[:half], metrics[half:])):
            payload = dict(item.payload, metrics=chunk, batch_id="%s-h%d" % (item.payload.get("batch_id", ""), index))
            parts.append(_Item(item.endpoint, payload, len(chunk), _encode(payload)))
        with self._cond:
            self._queue.extendleft(reversed(parts))
            self._cond.notify_all()
        # The halves are queued (and written ahead like any batch); the whole is not needed.
        self._finish(item)

    def _reject(self, item, status, detail):
        """400-class answer for the whole request: kept in ``rejected/`` for inspection, counted."""
        self.counters["rejected_batches"] += 1
        self.counters["rejected_points"] += item.points
        self.last_error = f"HTTP {status}: {detail}"
        log_once(("http-reject", item.endpoint, status), logging.ERROR,
                 "Lens rejected a %s request as a whole (HTTP %s: %s); kept in %s (counted in rejected_batches; "
                 "`primus-lens doctor` shows them; this line is printed once per cause)",
                 item.endpoint, status, detail, self.rejected.directory)
        self.rejected.write(item.endpoint, item.payload, item.points, item.body, count_loss=False)
        self._finish(item)

    def _mark_up(self):
        if self.auth_refused is not None:
            get_logger().warning("Lens accepts our requests again (was HTTP %s); replaying the kept batches",
                                 self.auth_refused)
            self.auth_refused = None
        elif self.down:
            get_logger().info("Lens API reachable again; replaying the spool")
        self.down = False
        self._flush_gave_up = False

    def _mark_down(self):
        self.down = True
        self._next_probe = time.monotonic() + _PROBE_INTERVAL

    def _replay_spool(self, force: bool):
        """Send spooled requests oldest first; stop at the first failure.

        While Lens is down this is the probe: at most one request every few seconds,
        or one at once when ``force`` (a flush is waiting).
        """
        if not force and self.down and time.monotonic() < self._next_probe:
            return
        sent_any = False
        me = "-%d-" % os.getpid()
        for claimed, record in self.spool.claim():
            if self._flush_deadline is not None and time.monotonic() >= self._flush_deadline:
                self.spool.release(claimed)
                return
            endpoint = record.get("endpoint", ENDPOINT_METRICS)
            points = int(record.get("points") or 0)
            payload = record.get("payload")
            if isinstance(payload, dict) and "exporter" in payload and me in os.path.basename(claimed):
                # Our own counters of back then: Lens keeps the latest report, so send today's.
                payload = dict(payload, exporter=self.exporter_counters(self._base_exporter))
            item = _Item(endpoint, payload, points, _encode(payload), path=claimed, replay=True)
            with self._cond:
                self._inflight = item
            if self._deliver(item, 1 if self.down else 3):
                self.counters["replayed_batches"] += 1
                self.counters["replayed_points"] += points
                sent_any = True
            else:
                return
        self._spool_pending = False
        if sent_any:
            get_logger().debug("spool replayed to %s", self.base_url)

    # -------------------------------------------------------------- reporting
    def exporter_counters(self, base=None) -> dict:
        """The ``exporter`` object of a metrics body (SPEC): cumulative counters of this process."""
        c = self.counters
        out = dict(base or {})
        out["filtered_points"] = int(out.get("filtered_points", 0)) + c["filtered_points"]
        out.update({"rejected_points": c["rejected_points"], "rejected_batches": c["rejected_batches"],
                    "auth_rejected_batches": c["auth_rejected_batches"], "spooled_points": c["spooled_points"],
                    "spool_write_errors": self.spool.write_errors,
                    "spool_dropped_points": self.spool.dropped_points,
                    "failed_attempts": c["failed_attempts"], "replayed_points": c["replayed_points"]})
        return out

    def stats(self):
        out = dict(self.counters)
        out.update({"api_base_url": self.base_url, "down": self.down, "queued": len(self._queue),
                    "last_error": self.last_error, "auth_refused": self.auth_refused,
                    "rejected_files": len(self.rejected.files())})
        out.update(self.spool.stats())
        return out


_NUMBER_TYPES = frozenset({int, float})
_INT_TYPES = frozenset({int})


def _all_fine(points) -> bool:
    """The usual case, in C-level passes (~0.05 µs a point): every step and row within the limits."""
    n = len(points)
    try:
        steps = list(map(dict.get, points, repeat("step", n), repeat(0, n)))
        if not set(map(type, steps)) <= _NUMBER_TYPES:
            return False
        total = sum(steps, 0.0)
        if total - total != 0 or min(steps) < -limits.MAX_ABS_STEP or max(steps) > limits.MAX_ABS_STEP:
            return False  # a NaN/±Inf makes the sum non-finite
        rows = list(map(dict.get, points, repeat("row", n)))
        kinds = set(map(type, rows))
        if kinds == {type(None)}:
            return True
        kinds.discard(type(None))
        present = [r for r in rows if r is not None] if None in rows else rows
        return kinds <= _INT_TYPES and min(present) >= 0 and max(present) <= limits.MAX_ROW
    except (TypeError, ValueError, OverflowError):
        return False


def _finite_step(step, top) -> bool:
    try:
        return -top <= step <= top
    except TypeError:
        return False


def _chunks(points, size):
    if len(points) <= size:
        return [points]
    return [points[i:i + size] for i in range(0, len(points), size)]


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

        recorder = get_recorder()
        cfg = recorder.config
        _sink = None
        if cfg.api_reporting:
            spool = Spool(cfg.spool_dir, int(cfg.spool_max_mb * 1024 * 1024), on_error=recorder.request_stats)
            _sink = HttpSink(cfg.api_base_url, cfg.api_token, cfg.http_timeout, cfg.max_retries, spool,
                             max_points=cfg.batch_size)
        _sink_pid = os.getpid()
    return _sink


@hookimpl
def lens_report_metrics(batch):
    sink = get_sink()
    if sink is not None:
        sink.report_metrics(batch.to_payload())


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
