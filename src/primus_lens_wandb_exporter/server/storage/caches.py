"""What a server process keeps in memory between batches: each series' rollup tail, its id
and its last committed summary (each checked against the database before use: the tail by
the series' ``rev``, see :class:`.rollup.Tail`; the summary by ``Backend._sole_writer``)."""

from __future__ import annotations

import threading
from typing import Dict, List, Optional, Sequence

from .rollup import Tail


class TailCache:
    """:class:`Tail` per series id, least recently written dropped first.

    A tail takes ~2–6 KiB (up to 64 points in arrays and two blocks per level: 2.2–3.4 KiB
    at row 340, 4.3–5.8 KiB at row 100,000, tests/server/storage/test_tail_size.py), so the
    default bounds it at ~35–95 MiB per server process; a
    series whose tail was dropped is read back from the database at its next
    write, as without a cache.  The bound must exceed the series a fleet writes
    round after round: a fleet sends every series once a second in much the same
    order, so with more live series than this every tail is dropped before its
    next use (8,192 did that to 1,000 ranks x 10 metrics: ~3.6 instead of ~1.2 ms
    of storage CPU per request once their series had rollups).
    """

    #: the default bound (``serve --rollup-tails``)
    DEFAULT = 16384

    def __init__(self, capacity: int = DEFAULT):
        self.capacity = capacity
        self._tails: Dict[int, Tail] = {}
        self._lock = threading.Lock()

    def get(self, sid: int) -> Optional[Tail]:
        """The tail last kept for ``sid`` (current or not)."""
        return self._tails.get(sid)

    def usable(self, sid: int, rev: int, max_step: int, stored: Sequence[int],
               needs: Dict[int, List[int]]) -> Optional[Tail]:
        """The tail of ``sid`` when it answers the reads of this batch, else None."""
        t = self._tails.get(sid)
        return t if t is not None and t.covers(rev, max_step, stored, needs) else None

    def put(self, tails: Sequence[Tail]) -> None:
        """Keep tails of committed batches (never replacing a newer one)."""
        if not tails:
            return
        with self._lock:
            d = self._tails
            for t in tails:
                old = d.pop(t.sid, None)
                d[t.sid] = t if old is None or old.rev <= t.rev else old
            while len(d) > self.capacity:
                del d[next(iter(d))]


class KeyCache:
    """Series key -> what this process learnt of the series, all dropped at once past
    ``capacity`` (rare: a server with that many live series just reads them again).

    Two of them per store: the series ids (assigned by the database, never changed)
    and the summaries this process last committed (the :data:`.summaries.SUMMARY_READ`
    fields after the key), used only while no other connection has written the
    database since (``Backend._sole_writer``).
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._map: dict = {}

    def get(self, key):
        return self._map.get(key)

    def put(self, entries: dict) -> None:
        if len(self._map) + len(entries) > self.capacity:
            self._map = {}
        self._map.update(entries)

    def clear(self) -> None:
        self._map = {}

    def discard(self, keys) -> None:
        """Forget ``keys`` (those not held are ignored)."""
        pop = self._map.pop
        for k in keys:
            pop(k, None)
