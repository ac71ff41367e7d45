"""The ingest path: the four ``/api/v1/wandb/*`` POSTs, from body bytes to the committed answer.

Measured on one worker (docs/capacity-log.md, the first pass): a 10-point ``/wandb/metrics``
request cost ~1.3 ms of server CPU, of which the storage was under a third; the
rest was the way there: FastAPI's routing, request object, dependency and
exception layers, one threadpool hop per request (the GIL handed to a worker
thread and back, each hop a futex wake-up contended by the event loop), and one
database transaction per request.  So:

- The one ASGI layer (:class:`.middleware.Edge`), after the Host, Origin,
  Content-Type and token checks (and access-logged and counted like any other
  request), answers the ingest POSTs itself.  Every other request,
  and the FastAPI routes of the same paths (they stay for the OpenAPI document),
  go on to FastAPI.  Both call :meth:`IngestPath.handle`: one definition of the
  admission, the size limits and the answer.
- :class:`IngestWriter`: ``store.ingest_concurrency`` writer threads (1 for
  SQLite, which has one writer anyway) take whatever requests are queued, parse
  and validate each (a bad body fails only itself), store all of them in **one
  transaction** (:meth:`Store.ingest_many`: group commit) and then answer each.
  A request is answered only after the commit that holds its points, so what
  was acknowledged survives a kill -9, as before.  The event loop is woken once
  per group, not once per request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

import orjson

from .. import limits
from ..redact import redact_url_credentials
from ..wire import ENDPOINT_BATCH, ENDPOINT_DETECTION, ENDPOINT_METRICS, ENDPOINT_RUN
from . import validate
from .auth import API_PREFIX
from .errors import RETRY_AFTER_S, ApiError, busy_body, unavailable
from .storage.model import MAX_REJECTED_LISTED

log = logging.getLogger("primus_lens.server")

#: The ingest routes this module answers, and what each stores.
PATHS = tuple(API_PREFIX + e for e in (ENDPOINT_METRICS, ENDPOINT_DETECTION, ENDPOINT_RUN, ENDPOINT_BATCH))
#: A group stops growing past this many body bytes (its parsed bodies are held at once) ...
GROUP_BYTES = 4 * 1024 * 1024
#: ... or this many requests (one transaction's work stays short: the first answer waits for the last).
GROUP_REQUESTS = 512

_INTERNAL = {"error": "internal_error", "message": "internal server error (logged on the server)", "field": None}


class Prepared:
    """One validated request: what to store, and how to answer once it is stored."""

    __slots__ = ("metrics", "detections", "runs", "answer")

    def __init__(self, metrics: Sequence = (), detections: Sequence = (), runs: Sequence = (),
                 answer: Callable[[Any], dict] = None):
        self.metrics, self.detections, self.runs, self.answer = metrics, detections, runs, answer


def parse(raw: bytes) -> Any:
    """orjson parse of an ingest body, with the JSON depth and width limits (400/413 name the problem)."""
    validate.refuse_too_wide(raw)  # a large body of too many values: refused before the parse
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, "invalid_json", f"body: not valid JSON ({e})", "body") from None
    # Every ingest path parses here (the msgspec fast path falls back here for
    # anything it cannot vouch for), so the depth limit holds on all of them.
    return validate.check_depth(body)


def _metrics_answer(batches, res) -> dict:
    # Points refused one by one are listed (at most the first 100 overall) and counted.
    rejected = [r for b in batches for r in b.rejected][:MAX_REJECTED_LISTED]
    n_rejected = sum(b.rejected_count for b in batches)
    # rows: entries of the bodies' ``rows`` read (a client sending rows checks that it was understood)
    return {"count": res.count, "inserted": res.inserted, "rejected_count": n_rejected, "rejected": rejected,
            "rows": sum(b.rows for b in batches)}


def prepare_metrics(raw: bytes) -> Prepared:
    batch = validate.metrics_batch_bytes(raw, parse)

    def answer(res):
        out = _metrics_answer([batch], res)
        msg = "metrics reported successfully"
        if out["rejected_count"]:
            msg = f"{res.count} points stored, {out['rejected_count']} refused (see rejected)"
        return {"message": msg, **out}

    return Prepared(metrics=[batch], answer=answer)


def _detection_answer(res):
    return {"message": "detection reported successfully"}


def prepare_detection(raw: bytes) -> Prepared:
    return Prepared(detections=[validate.detection(redact_url_credentials(parse(raw)))], answer=_detection_answer)


def _run_answer(res):
    return {"message": "run reported successfully", "count": res.runs}


def _redacted(run: dict) -> dict:
    """A validated run with the URL credentials out of its config, summary and tags: readers of
    every workload see them (``config=vars(args)`` often holds a database URL)."""
    for k in ("config", "summary", "tags"):
        if run.get(k):
            run[k] = redact_url_credentials(run[k])
    return run


def prepare_run(raw: bytes) -> Prepared:
    return Prepared(runs=[_redacted(validate.run(parse(raw)))], answer=_run_answer)


def prepare_batch(raw: bytes) -> Prepared:
    validate.refuse_too_many_points(raw)  # before the parse: a huge body is refused cheaply
    body = validate.require_object(parse(raw))
    parts = body.get("metrics")
    # The point limit holds for the whole request, over all its metrics parts.
    listed = parts if type(parts) is list else [parts]
    if sum(validate.points_in(m) for m in listed) > limits.MAX_POINTS_PER_REQUEST:
        with_rows = any(type(m) is dict and m.get("rows") for m in listed)
        raise validate.too_many_points("rows" if with_rows else "metrics")
    metrics = validate.metrics_list(parts, "metrics") if parts is not None else []
    dets = ([validate.detection(redact_url_credentials(body["detection"]), "detection.")]
            if body.get("detection") is not None else [])
    runs = [_redacted(r) for r in validate.run_list(body["run"], "run")] if body.get("run") is not None else []
    logs = body.get("logs")

    def answer(res):
        results = {}
        if metrics:
            results["metrics"] = {"success": True, **_metrics_answer(metrics, res)}
        if dets:
            results["detection"] = {"success": True}
        if runs:
            results["run"] = {"success": True, "count": res.runs}
        if logs is not None:
            results["logs"] = {"success": True, "count": len(logs) if isinstance(logs, list) else 1,
                               "stored": False}
        return {"success": True, "results": results}

    return Prepared(metrics=metrics, detections=dets, runs=runs, answer=answer)


PREPARE: Dict[str, Callable[[bytes], Prepared]] = dict(zip(PATHS, (prepare_metrics, prepare_detection, prepare_run,
                                                                   prepare_batch)))


class _Item:
    __slots__ = ("prepare", "raw", "loop", "future")

    def __init__(self, prepare, raw, loop, future):
        self.prepare, self.raw, self.loop, self.future = prepare, raw, loop, future


def _settle(outcomes) -> None:
    """On the event loop: hand each waiting request its answer or its error."""
    for fut, ok, value in outcomes:
        if fut.done():  # the request was cancelled (server shutting down)
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class IngestWriter:
    """Writer threads that validate and group-commit queued ingest requests.

    ``after_commit`` runs after each group (serve --workers: the shared counters
    are written before the answers go out, so /health on another worker counts
    them even if this process is killed right after).
    """

    def __init__(self, store, after_commit: Optional[Callable[[], None]] = None, threads: Optional[int] = None):
        self.store = store
        self.after_commit = after_commit
        self.n_threads = threads or store.ingest_concurrency
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, prepare: Callable[[bytes], Prepared], raw: bytes) -> "asyncio.Future":
        """Queue one body (called on the event loop); the future gets the answer dict."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if not self._threads:
            self._start()
        if self._closed:
            raise RuntimeError("the ingest writer is closed (server shutting down)")
        self._queue.put(_Item(prepare, raw, loop, fut))
        return fut

    def _start(self) -> None:
        with self._lock:
            if self._threads or self._closed:
                return
            for i in range(self.n_threads):
                t = threading.Thread(target=self._run, name=f"lens-ingest-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    def close(self, timeout: float = 60.0) -> None:
        """Finish every queued request, then stop the threads (call at shutdown)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        for t in threads:
            t.join(timeout)

    def _run(self) -> None:
        q = self._queue
        carry = None
        while True:
            item = carry if carry is not None else q.get()
            carry = None
            if item is None:
                return
            group = [item]
            size = len(item.raw)
            # Whatever else is queued joins this group, within its bounds; a request
            # that would overflow it starts the next one.
            while len(group) < GROUP_REQUESTS:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    q.put(None)  # the stop sentinel: after this group
                    break
                if size + len(nxt.raw) > GROUP_BYTES:
                    carry = nxt
                    break
                group.append(nxt)
                size += len(nxt.raw)
            try:
                self._process(group)
            except Exception as e:  # never let the writer die: later requests would wait forever
                log.error("ingest writer: a group of %d requests failed", len(group), exc_info=e)
                try:
                    self._answer([(item, False, e) for item in group])
                except Exception:
                    pass

    def _process(self, group: List[_Item]) -> None:
        outcomes: List[tuple] = []  # (item, ok, value)
        ready = []
        for item in group:
            try:
                ready.append((item, item.prepare(item.raw)))
            except Exception as e:  # ApiError (the 400s) or a bug: this request only
                outcomes.append((item, False, e))
        try:
            if ready:
                results = self.store.ingest_many([(p.metrics, p.detections, p.runs) for _, p in ready])
                for (item, p), res in zip(ready, results):
                    if isinstance(res, BaseException):
                        outcomes.append((item, False, res))
                        continue
                    try:
                        outcomes.append((item, True, p.answer(res)))
                    except Exception as e:
                        outcomes.append((item, False, e))
        except BaseException as e:  # ingest_many returns errors; this is a bug: fail the group, loudly
            log.error("ingest group of %d requests failed", len(ready), exc_info=e)
            done = {id(o[0]) for o in outcomes}
            outcomes.extend((item, False, e) for item, _ in ready if id(item) not in done)
        finally:
            if self.after_commit is not None:
                try:
                    self.after_commit()
                except Exception as e:
                    log.warning("writing the shared counters failed: %s", e)
        self._answer(outcomes)

    @staticmethod
    def _answer(outcomes) -> None:
        """Hand ``(item, ok, value)`` outcomes to their event loops, one wake-up per loop."""
        by_loop: Dict[Any, list] = {}
        for item, ok, value in outcomes:
            by_loop.setdefault(item.loop, []).append((item.future, ok, value))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # that loop is closed: nobody waits for these answers
                pass


class IngestPath:
    """Admission, body limits and answers of the ingest POSTs (both entries call :meth:`handle`)."""

    def __init__(self, writer: IngestWriter, max_body: int, inflight_limit: int):
        self.writer = writer
        self.max_body = max_body
        self.inflight_limit = inflight_limit
        self.inflight = 0  # body bytes admitted and not yet answered (event loop only: no lock)

    async def handle(self, path: str, content_length: Optional[bytes], chunks):
        """``(status, body bytes, extra headers)`` of one ingest POST, or None when the
        client went away before its body was read.  ``chunks``: an async iterator of
        the body's bytes that raises :class:`ClientGone` when the client disconnects."""
        max_body = self.max_body
        try:
            cost = min(int(content_length or max_body), max_body)
        except ValueError:
            cost = max_body  # answered 400 below
        cost = max(cost, 1)
        if self.inflight and self.inflight + cost > self.inflight_limit:
            # Admission: nothing is read or done; the body waits in the client.
            return 503, busy_body(f"{self.inflight} bytes of ingest bodies are being processed (limit "
                                  f"{self.inflight_limit}); retry later"), \
                [(b"retry-after", str(RETRY_AFTER_S).encode())]
        self.inflight += cost
        try:
            if content_length is not None:
                try:
                    if int(content_length) > max_body:
                        raise ApiError(413, "body_too_large", f"body: larger than {max_body} bytes", "body")
                except ValueError:
                    raise ApiError(400, "invalid_header", "Content-Length: not an integer",
                                   "Content-Length") from None
            parts = []
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > max_body:
                    raise ApiError(413, "body_too_large", f"body: larger than {max_body} bytes", "body")
                parts.append(chunk)
            raw = parts[0] if len(parts) == 1 else b"".join(parts)
            answer = await self.writer.submit(PREPARE[path], raw)
            return 200, orjson.dumps(answer), ()
        except ApiError as e:
            return e.status, orjson.dumps(e.body()), ()
        except ClientGone:
            return None
        except Exception as e:
            down = unavailable(e)
            if down is not None:  # the exporter retries, then spools: nothing is lost
                log.warning("POST %s: %s", path, down.message)
                return 503, orjson.dumps(down.body()), [(b"retry-after", str(RETRY_AFTER_S).encode())]
            log.error("unhandled error on POST %s", path, exc_info=e)
            return 500, orjson.dumps(_INTERNAL), ()
        finally:
            self.inflight -= cost


class ClientGone(Exception):
    """The client disconnected before its body was read: there is nobody to answer."""


async def asgi_chunks(receive):
    """The body of an ASGI request as chunks; raises ClientGone on a disconnect."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return
