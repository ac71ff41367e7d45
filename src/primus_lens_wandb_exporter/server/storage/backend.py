"""What a database backend provides, and the low-level reads both the write side and the
queries use.

Backends (:mod:`.sqlite`, :mod:`.postgres`) provide connections, transactions, the
schema and the few statements whose SQL differs; the logic that is the same on both
lives once in :mod:`.ingest`, :mod:`.rollup_upkeep`, :mod:`.reports`, :mod:`.queries`
and :mod:`.retention`, which :class:`~.store.Store` puts together.  SQL written
there uses ``?`` placeholders; the PostgreSQL backend rewrites them (:meth:`Backend._q`).
"""

from __future__ import annotations

from contextlib import contextmanager
from operator import itemgetter
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import rollup
from .caches import KeyCache, TailCache
from .model import ROLLUP_COLS, SeriesKey, StaleSummaries, _nan

_second = itemgetter(1)


class Backend:
    """The connection contract of a Lens database, and the reads both sides share."""

    kind = "?"
    #: ingest requests processed at once (see app.py: more only adds GIL contention)
    ingest_concurrency = 1
    #: exceptions after which a whole ingest transaction is retried
    retry_errors: tuple = ()
    _rollup_min_points = rollup.ROLLUP_MIN_POINTS
    #: True where :meth:`_sole_writer` can tell (SQLite) or where the summary UPDATE checks
    #: the revision it started from (``optimistic_summaries``): only then are the summaries
    #: this process commits kept, for its next transaction to use.
    caches_summaries = False
    #: True (PostgreSQL): a transaction whose series summaries are all cached uses them
    #: without the series locks or reading them back, and its summary UPDATE applies only
    #: where each row's ``rev`` is still the cached one; any other raises
    #: :class:`~.model.StaleSummaries` and the transaction is retried from the database.
    #: Saves two of a fleet request's ~8 round trips (ingest.py ``_ingest_tx``).
    optimistic_summaries = False
    #: appended to the write side's summary reads: PostgreSQL locks the rows read (in id
    #: order) and reads their latest version, so a writer from the cache (which takes no
    #: series lock) cannot change them between the read and the UPDATE
    _summary_lock = ""

    def __init__(self) -> None:
        self._tails = TailCache()
        self._sids = KeyCache(200_000)  # series key -> id (never changes once assigned)
        self._summaries = KeyCache(100_000)  # series key -> summary, where caches_summaries
        # ("workload"|"pod"|"exporter", row key) -> (epoch ms written, the row's other values):
        # the "last seen" rows this process committed (ingest.py, TOUCH_EVERY_MS)
        self._touched = KeyCache(100_000)
        #: what /health reports under "storage": work done, retries and background work
        self.counters: Dict[str, int] = {"ingest_transactions": 0, "points_inserted": 0, "ingest_retries": 0}

    def keep_rollup_tails(self, capacity: int) -> None:
        """Bound the rollup tails this process keeps (``serve --rollup-tails``; before any ingest)."""
        self._tails = TailCache(capacity)

    def stats(self) -> Dict[str, Any]:
        """Counters of this process's store (retries, background maintenance)."""
        return dict(self.counters)

    # -- to be provided by backends -------------------------------------------------

    @contextmanager
    def write_tx(self, on_commit: Optional[Callable[[], None]] = None) -> Iterator[Any]:  # pragma: no cover
        """A cursor inside one write transaction (committed on exit).  ``on_commit``
        runs right after a successful commit, before another writer of this process
        can begin (what the process caches about the committed state goes there)."""
        raise NotImplementedError
        yield

    @contextmanager
    def read_cursor(self) -> Iterator[Any]:  # pragma: no cover - abstract
        """A cursor for reads."""
        raise NotImplementedError
        yield

    def _write_points(self, cur, new: List[Tuple[int, dict, Any]], updates: List[tuple]) -> None:  # pragma: no cover
        """Insert ``new`` points (per series: ``(id, {row: (value, ts, step)}, encoded)``,
        proven absent while this transaction holds the series; ``encoded`` is
        :meth:`_encode_points` of the two, or None) and upsert ``updates`` rows
        ``(series_id, row_index, step, value, timestamp)``."""
        raise NotImplementedError

    def _encode_points(self, sid: int, pts: Dict[int, Tuple[float, float, float]]) -> Any:
        """A series' points in the form :meth:`_write_points` inserts, built before
        the write transaction so that the work is not done under its locks."""
        return None

    def _lock_series(self, cur, keys: Sequence[SeriesKey]) -> None:
        """Serialise writers of the same series (no-op where writes are serial)."""

    def _sole_writer(self, cur) -> bool:
        """Inside a write transaction: True when no other connection has written the
        database since this process's previous write transaction, so the series
        summaries it committed then are still the stored ones.  False where the
        backend cannot tell (PostgreSQL: other replicas write concurrently)."""
        return False

    def close(self) -> None:  # pragma: no cover - abstract
        """Release connections."""

    def ping(self) -> None:
        """Raise if the database does not answer."""
        with self.read_cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()

    def _q(self, sql: str) -> str:
        return sql

    def _ex(self, cur, sql, params=()):
        cur.execute(self._q(sql), params)
        return cur

    def _many(self, cur, sql, rows):
        if rows:
            cur.executemany(self._q(sql), rows)

    def _insert_rows(self, cur, head: str, types: Sequence[str], tail: str, rows: Sequence[tuple]) -> None:
        """``{head} VALUES (?, ...) {tail}`` for every row (``types``: the columns'
        PostgreSQL types, for backends that send all rows as one statement)."""
        if rows:
            cur.executemany(self._q(f"{head} VALUES ({', '.join('?' * len(types))}) {tail}"), rows)

    #: The series summary columns an ingest rewrites (then ``rev`` is bumped), in the
    #: order of :meth:`_update_summaries` rows, which end with the series id.
    SUMMARY_UPDATE = (("count", "bigint"), ("min_row", "bigint"), ("max_row", "bigint"), ("first_ts", "float8"),
                      ("last_ts", "float8"), ("has_rollup", "bigint"), ("min_step", "float8"),
                      ("max_step", "float8"), ("step_is_row", "bigint"))

    def _update_summaries(self, cur, rows: Sequence[tuple]) -> None:
        """Rewrite the summaries of stored series (rows: :data:`SUMMARY_UPDATE` values, then the
        id and the ``rev`` the new values were computed from); raise :class:`StaleSummaries`
        unless every row still had that ``rev``."""
        if rows:
            sets = ", ".join(f"{c} = ?" for c, _ in self.SUMMARY_UPDATE)
            cur.executemany(self._q(f"UPDATE series SET {sets}, rev = rev + 1 WHERE id = ? AND rev = ?"), rows)
            # sqlite3 sums executemany's row counts
            if cur.rowcount != len(rows):
                raise StaleSummaries(f"{len(rows) - cur.rowcount} of {len(rows)} series summaries changed")

    # -- reads shared by the write side (rollup upkeep) and the queries --------------

    def _fetch_raw(self, cur, sid: int, lo: Optional[int], hi: Optional[int],
                   t0: Optional[float] = None, t1: Optional[float] = None, after: Optional[int] = None,
                   nonfinite_only: bool = False, after_step: Optional[float] = None,
                   with_step: bool = False) -> List[tuple]:
        """``(row, value, ts)`` points of one series in row order (``with_step``: ``(row, value, ts, step)``),
        rows ``lo..hi`` and ``> after``."""
        sql, params = self._raw_sql(sid, lo, hi, t0, t1, after, after_step, with_step)
        if nonfinite_only:
            sql += " AND " + self._nonfinite_sql
        self._ex(cur, sql + " ORDER BY row_index", params)
        rows = cur.fetchall()
        if None in map(_second, rows):  # a NULL value is a NaN stored by SQLite
            return [(r[0], _nan(r[1])) + tuple(r[2:]) for r in rows]
        return rows  # already (step, value, ts) tuples: no per-row Python work

    @staticmethod
    def _raw_sql(sid: int, lo: Optional[int], hi: Optional[int], t0: Optional[float], t1: Optional[float],
                 after: Optional[int], after_step: Optional[float], with_step: bool) -> Tuple[str, list]:
        """The SELECT (without ORDER BY) of one series' points under the query's filters, and its parameters."""
        sql = ("SELECT row_index, value, timestamp, step" if with_step else "SELECT row_index, value, timestamp") \
            + " FROM points WHERE series_id = ?"
        params: list = [sid]
        if lo is not None:
            sql += " AND row_index BETWEEN ? AND ?"
            params += [lo, hi]
        if after is not None:
            sql += " AND row_index > ?"
            params.append(after)
        if after_step is not None:
            sql += " AND step > ?"
            params.append(after_step)
        if t0 is not None:
            sql += " AND timestamp >= ?"
            params.append(t0)
        if t1 is not None:
            sql += " AND timestamp <= ?"
            params.append(t1)
        return sql, params

    _nonfinite_sql = "(value IS NULL OR value IN (9e999, -9e999))"

    def _fetch_rollup_blocks(self, cur, sid: int, needs: Dict[int, List[int]]):
        """Stored rollup rows for ``{level: [blocks]}``, keyed ``(level, block)``.

        Point lookups one by one: in-process SQLite answers each in microseconds,
        far faster than one statement with an OR or row-value list.
        """
        out = {}
        sql = self._q(f"SELECT {ROLLUP_COLS} FROM series_rollup WHERE series_id = ? AND level = ? AND block = ?")
        for level, blocks in needs.items():
            for b in blocks:
                cur.execute(sql, (sid, level, b))
                r = cur.fetchone()
                if r is not None:
                    out[(level, b)] = self._rollup_agg(r)
        return out

    @staticmethod
    def _rollup_agg(r) -> tuple:
        r = list(r)
        r[3] = _nan(r[3])  # first value: NULL is a stored NaN
        r[6] = _nan(r[6])
        return tuple(r)
