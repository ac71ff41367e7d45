"""Unbounded ``metrics/data`` answers, streamed with constant server memory.

The database read and the encoding run in one of ``MAX_STREAMS`` threads; ~1 MiB chunks
go to the response through a bounded queue, so a slow client stalls the read instead of
growing memory, a client that disconnects ends it, and one that stops reading is given up
after ``Runtime.stream_stall_s`` (its slot freed).  Also the point encoding both the
streamed and the downsampled answers use.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading

import orjson
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import busy
from ..runtime import MAX_STREAMS

log = logging.getLogger("primus_lens.server")

#: Encoded chunks (~1 MiB each) buffered per streamed answer: its memory bound.
_STREAM_BUFFER = 4
_END = object()


class _ClientGone(Exception):
    """The client of a streamed answer disconnected: its read stops."""


class _ClientStalled(Exception):
    """The client of a streamed answer took no chunk for ``Runtime.stream_stall_s``."""


class _StallGuardedResponse(StreamingResponse):
    """A streamed answer that gives up on a client that stops reading: each send waits at most
    ``stall_s``, then the body's generator is closed (freeing its stream slot and database read),
    the stall counted, and the answer cut short (uvicorn closes the connection).

    A send returns once the connection's buffers have room, and the kernel's send buffer (up to
    a few MB on a fast link) signals room only when about half of it has drained: so a reader
    slower than ~1 MB per ``stall_s`` is cut off too, which sets the default (120 s)."""

    def __init__(self, content, stall_s: float, on_stall, **kw):
        super().__init__(content, **kw)
        self.stall_s = stall_s
        self.on_stall = on_stall

    async def stream_response(self, send) -> None:
        async def guarded(message) -> None:
            try:
                await asyncio.wait_for(send(message), self.stall_s)
            except asyncio.TimeoutError:
                raise _ClientStalled from None

        try:
            await super().stream_response(guarded)
        except _ClientStalled:
            self.on_stall()
            await self.body_iterator.aclose()


def encode_value(v: float):
    # JSON has no NaN/Infinity: they travel as the strings the protocol names.
    if v != v:
        return "NaN"
    if v == math.inf:
        return "Infinity"
    if v == -math.inf:
        return "-Infinity"
    return v


def data_items(rows, src):
    enc = encode_value
    # iteration is the chart step: an int when integral (what old clients expect), else a float.
    return [{"metric_name": m, "value": enc(v), "timestamp": ts, "iteration": int(st) if st.is_integer() else st,
             "row": row, "data_source": src, "rank": rk, "run_id": run} for m, rk, run, st, v, ts, row in rows]


# Streamed answers: the database read and the encoding run in one of MAX_STREAMS
# threads (a cursor stays on its thread; the slots and pool are the runtime's),
# handing ~1 MiB chunks through a bounded queue, so an answer of any size costs the
# server a constant amount of memory.
def stream_data(rt, uid, src, names, start, end, ranks, run_id, after_step, after_row, x):
    store, stream_slots = rt.store, rt.stream_slots
    if not stream_slots.acquire(blocking=False):
        return busy(f"{MAX_STREAMS} unbounded metrics/data answers are streaming already; retry later "
                    "or pass max_points")
    chunks: "queue.Queue" = queue.Queue(_STREAM_BUFFER)
    stop = threading.Event()

    def put(item) -> None:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _ClientGone

    def produce():
        n = 0
        rows_iter = store.stream_data(uid, src, names, start, end, ranks, run_id, after_step, after_row, x)
        try:
            for rows in rows_iter:
                part = orjson.dumps(data_items(rows, src))[1:-1]
                put(part if n == 0 else b"," + part)
                n += len(rows)
            put(b'],"total_count":' + str(n).encode() + b"}")
            put(_END)
        except _ClientGone:
            pass
        except Exception as e:  # the answer is cut short (invalid JSON), never silently partial
            log.error("streaming metrics/data of %r failed after %d points", uid, n, exc_info=e)
            try:
                put(e)
            except _ClientGone:
                pass
        finally:
            rows_iter.close()  # ends the read transaction on this thread
            stream_slots.release()

    try:
        rt.stream_pool.submit(produce)
    except Exception:
        stream_slots.release()
        raise

    async def body():
        try:
            yield (b'{"workload_uid":' + orjson.dumps(uid) + b',"data_source":' + orjson.dumps(src)
                   + b',"data":[')
            while True:
                item = await run_in_threadpool(chunks.get)
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise RuntimeError("metrics/data stream failed") from item
                yield item
        finally:
            stop.set()

    def stalled() -> None:
        store.counters["streams_stalled"] = store.counters.get("streams_stalled", 0) + 1
        log.warning("metrics/data of %r: the client took nothing for %.0f s; answer cut short, slot freed",
                    uid, rt.stream_stall_s)

    return _StallGuardedResponse(body(), rt.stream_stall_s, stalled, media_type="application/json")
