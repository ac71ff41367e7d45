"""HTTP sink to the Lens API (a sink object, built by ``lens_make_sinks`` from the config): keep-alive session, timeouts, backoff with jitter,
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
import logging
import os
import threading
import time
from typing import Optional

from .. import limits
from ..core.hookspecs import hookimpl
from ..core.log import log_once
from ..wire import ENDPOINT_DETECTION, ENDPOINT_METRICS, ENDPOINT_RUN
from .http_delivery import WRITE_AHEAD, Delivery, _Item, _encode, _settle_environment
from .payload import as_points, chunks, halves, has_rows, row_chunks
from .spool import Spool

#: Request bodies the sender's queue holds in memory before new ones go to the spool (a burst of
#: logging far ahead of Lens).  The write-ahead bounds the loss window, not this: ~1.3M points as rows.
QUEUE_BYTES = 32 * 1024 * 1024


class HttpSink(Delivery):
    """Delivers request bodies to ``{base}{endpoint}``; spools on failure."""

    def __init__(self, base_url: str, token: Optional[str] = None, timeout: float = 5.0, max_retries: int = 8,
                 spool: Optional[Spool] = None, queue_limit: int = 1024, queue_bytes: int = QUEUE_BYTES,
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
        _settle_environment(self.session, self.base_url)
        self._requests = requests
        self._queue = collections.deque()
        self._queue_limit = queue_limit
        self._queue_bytes = queue_bytes
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
        # Metrics go as rows (docs/protocol.md) until a server answers one without reading them.
        self.rows_ok = True
        self.auth_refused = None  # the HTTP status while Lens refuses our token
        self._next_probe = 0.0
        self._thread = None
        self._spool_thread = None
        self.counters = {"sent_batches": 0, "sent_points": 0, "retries": 0, "failed_attempts": 0,
                         "spooled_batches": 0, "spooled_points": 0, "replayed_batches": 0,
                         "replayed_points": 0, "rejected_batches": 0, "rejected_points": 0,
                         "filtered_points": 0, "auth_rejected_batches": 0, "auth_rejected_points": 0,
                         "written_ahead_batches": 0, "split_requests": 0, "row_form_batches": 0}
        self.last_error = None
        # For the ``exporter`` report: the envelope (workload, pod, rank ...) and recorder
        # counters of the last metrics batch, and the report Lens last acknowledged.
        self._envelope = None
        self._base_exporter = {}
        self._delivered_exporter = None

    name = "http"

    # -------------------------------------------------------------- producer side
    def report_metrics(self, batch):
        """A batch from the recorder: gains this sink's counters (SPEC ``exporter``), then is sent.

        Filtered against the server's limits and split under them like ``submit_metrics``; the
        bodies are encoded from the batch's Point structs (``MetricBatch.encode``), in C.
        """
        self._base_exporter = batch.exporter or {}
        self._envelope = batch.envelope()
        exporter = self.exporter_counters(self._base_exporter)
        form = batch.row_form() if self.rows_ok else None
        if form is not None and batch.within_limits():
            parts = row_chunks(form[0], form[1], self.max_points)
            for rows, points, count in parts:
                batch_id = None
                if len(parts) > 1:
                    batch_id = self._part_id(batch.batch_id)
                self._submit_sized(ENDPOINT_METRICS, batch.rows_payload(exporter, rows, points, batch_id), count)
            return
        if not batch.within_limits():
            batch = batch.drop(self._refused(batch.points))
        total = len(batch)
        for start in range(0, total, self.max_points):
            stop = min(total, start + self.max_points)
            batch_id = None
            if stop - start != total:
                batch_id = self._part_id(batch.batch_id)
            self._submit_sized(ENDPOINT_METRICS, batch.wire_payload(exporter, start, stop if stop < total else None,
                                                                     batch_id), stop - start)

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
        """A metrics batch: filtered against the server's limits, split under them, queued (rows, if
        the payload has any, as points: this path checks and splits points)."""
        if has_rows(payload):
            payload = as_points(payload)
        points = self._check_points(payload.get("metrics") or [])
        if not points:
            return
        for chunk in chunks(points, self.max_points):
            part = dict(payload)
            part["metrics"] = chunk
            if len(chunk) != len(points):
                part["batch_id"] = self._part_id(payload.get("batch_id", ""))
            self._submit_sized(ENDPOINT_METRICS, part, len(chunk))

    def report_detection(self, detection: dict):
        self.submit(ENDPOINT_DETECTION, detection)

    def report_run(self, run: dict, event: str):
        self.submit(ENDPOINT_RUN, run)

    def close(self):
        """A forked child's copy: the parent's threads are not in the child, nothing to stop."""

    def submit(self, endpoint: str, payload: dict, points: int = 0):
        if endpoint == ENDPOINT_METRICS:
            self.submit_metrics(payload)
        elif endpoint == ENDPOINT_RUN:
            self._submit_sized(endpoint, payload, points)
        else:
            self._enqueue(_Item(endpoint, payload, points, _encode(payload)))

    def _part_id(self, batch_id: str) -> str:
        """The ``batch_id`` of one part of a batch cut in several requests (counted in ``split_requests``)."""
        part = "%s-%d" % (batch_id, self.counters["split_requests"])
        self.counters["split_requests"] += 1
        return part

    def _submit_sized(self, endpoint, payload, points):
        body = _encode(payload)
        if len(body) <= self.max_body:
            self._enqueue(_Item(endpoint, payload, points, body))
            return
        if endpoint == ENDPOINT_METRICS and points > 1:
            # Over the byte limit (long names, many keys): halves until each part fits.
            for part, count in halves(payload):
                part["batch_id"] = self._part_id(payload.get("batch_id", ""))
                self._submit_sized(endpoint, part, count)
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

    def _enqueue(self, item):
        with self._cond:
            # While Lens is down (or refuses our token) everything goes straight to disk: the
            # spool replay is the probe that finds it back.  Far behind: persist, not hold memory.
            queue = self._queue
            keep = self.down or (bool(queue) and (len(queue) >= self._queue_limit or
                                                  sum(len(i.body) for i in queue) + len(item.body) > self._queue_bytes))
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

@hookimpl
def lens_make_sinks(config, on_problem):
    """The HTTP sink of this process, when API reporting is on (``on_problem``: the spool failed)."""
    if not config.api_reporting:
        return None
    spool = Spool(config.spool_dir, int(config.spool_max_mb * 1024 * 1024), on_error=on_problem)
    return [HttpSink(config.api_base_url, config.api_token, config.http_timeout, config.max_retries, spool,
                     max_points=config.batch_size)]
