"""The network half of the HTTP sink: one POST with retries, what Lens's answer means
(accepted, refused points, 413 split, whole-request reject, auth hold), up/down state
and the spool replay that doubles as the probe while Lens is down; the counters it reports
(the ``exporter`` object of each body, ``stats``).

``Delivery`` is a mixin of :class:`~primus_lens_wandb_exporter.sinks.http.HttpSink`: the
queue, threads and write-ahead live there; this file only talks to the server.
"""

import logging
import os
import random
import re
import time
from itertools import repeat

import msgspec
import orjson

from .. import limits
from ..wire import ENDPOINT_METRICS
from ..core.log import get_logger, log_once
from .payload import as_points, halves, has_rows, points_of


def _encode(payload) -> bytes:
    """A request body, in C: orjson for dict bodies (as before: it also takes str subclasses such
    as torch's version strings in a detection body); a metrics body holding the recorder's Point
    structs, which orjson does not know, in msgspec (same bytes for the same data)."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return msgspec.json.encode(payload)


_decode = orjson.loads  # the answer: a small dict


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



class Delivery:
    """Sending one request and reading Lens's answer (mixed into ``HttpSink``)."""

    def _check_points(self, points):
        """Points Lens would refuse are filtered here (counted, one log line per cause)."""
        if _all_fine(points):
            return points
        bad = self._refused(points)
        if not bad:
            return points
        skip = set(bad)
        return [p for i, p in enumerate(points) if i not in skip]

    def _refused(self, points) -> list:
        """Indexes of the (dict) points Lens would refuse: counted in ``filtered_points``, logged once per cause."""
        bad = []
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
                bad.append(index)
                cause = "step" if not _finite_step(step, top) else "row"
                log_once(("filtered-point", cause), logging.WARNING,
                         "metric %r: %s %r is outside what Lens accepts (a finite number, |step| <= %g; "
                         "row 0..%d); such points are not sent (counted in filtered_points; one line per cause)",
                         point.get("name"), cause, step if cause == "step" else row, top, top_row)
        self.counters["filtered_points"] += len(bad)
        return bad

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
        if not self.rows_ok and has_rows(item.payload):  # queued or spooled before the server was found old
            item.payload = as_points(item.payload)
            item.body = _encode(item.payload)
        for attempt in range(attempts):
            deadline = self._flush_deadline
            try:
                response = self.session.post(url, data=item.body, timeout=self.timeout)
            except self._requests.RequestException as exc:
                status, retry_after, detail = None, None, repr(exc)
            else:
                status = response.status_code
                if status < 300:
                    if item.endpoint == ENDPOINT_METRICS:
                        answer = self._read_answer(response)
                        if has_rows(item.payload):
                            if "rows" not in answer:
                                return self._rows_unread(item, attempts)
                            self.counters["row_form_batches"] += 1
                    self.counters["sent_batches"] += 1
                    self.counters["sent_points"] += item.points
                    if item.endpoint == ENDPOINT_METRICS:
                        self._count_refused(answer)
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

    @staticmethod
    def _read_answer(response) -> dict:
        """Lens's answer to a metrics request ({} when it is not a JSON object)."""
        try:
            answer = _decode(response.content)
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def _rows_unread(self, item, attempts) -> str:
        """A server that answered a body with ``rows`` without reading them (older than the row
        form): the item is sent again as points, and so is everything after it."""
        self.rows_ok = False
        log_once(("rows-unread", self.base_url), logging.WARNING,
                 "Lens at %s does not read the row form of metrics requests (a server older than this "
                 "exporter): sending each point on its own instead (about 3x the bytes; upgrade Lens)",
                 self.base_url)
        return self._post(item, attempts)  # converted there, like every item after it

    def _count_refused(self, answer: dict):
        """Count the points Lens refused one by one (``rejected_count``), one log line per cause."""
        try:
            refused = int(answer.get("rejected_count") or 0)
        except (ValueError, TypeError):
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
        total = points_of(item.payload)
        self.max_points = max(1, min(self.max_points, total // 2))
        self.counters["split_requests"] += 1
        log_once(("http-413", item.endpoint), logging.WARNING,
                 "Lens answered 413 to a %d-point batch; sending at most %d points per request",
                 total, self.max_points)
        parts = []
        for index, (payload, count) in enumerate(halves(item.payload)):
            payload["batch_id"] = "%s-h%d" % (item.payload.get("batch_id", ""), index)
            parts.append(_Item(item.endpoint, payload, count, _encode(payload)))
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


def _settle_environment(session, base_url):
    """What ``requests`` reads from the environment on *every* request, read once here.

    With ``trust_env`` a session re-scans the environment and netrc per request for proxies,
    CA bundle and credentials (~0.2 ms of CPU a request, measured: issue 12); the one URL
    this sink posts to gets the same settings, resolved now, the way requests resolves them.
    """
    import requests

    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    if not session.auth:
        session.auth = requests.utils.get_netrc_auth(base_url)
    session.trust_env = False


def _retry_delay(attempt: int, retry_after) -> float:
    if retry_after:
        try:
            return min(60.0, max(0.0, float(retry_after)))
        except ValueError:
            pass
    # Full jitter: spreads the retries of many ranks hitting one server.
    return random.uniform(0.5, 1.5) * min(_BACKOFF_CAP, _BACKOFF_BASE * (2 ** attempt))
