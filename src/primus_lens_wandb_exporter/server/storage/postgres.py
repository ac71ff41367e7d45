"""PostgreSQL backend (psycopg 3): for clusters that outgrow one SQLite file.

Points go in with COPY into a per-connection temporary staging table and one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` (keys are unique within a batch
already, so the statement never touches a row twice).  The rows every request
rewrites (series summaries, workloads, pods, exporter counters) go in one
statement per table from ``unnest`` of array parameters (:func:`_array`).
Concurrent requests run in parallel transactions; writers of the same series are
serialised with transaction-scoped advisory locks (one per rank of a run) taken
in key order, because the summary and rollup maintenance reads what earlier
batches of that series wrote.
"""

from __future__ import annotations

import hashlib
import queue
import struct
import threading
import time
from contextlib import contextmanager
from operator import itemgetter
from typing import Dict, Iterator, Sequence

import psycopg

from . import schema
from .summaries import SUMMARY_READ
from .model import KEY_COLS, POINT_COLS, ROLLUP_COLS, SERIES_SUMMARY_COLS, SeriesKey, StaleSummaries
from .runs_filter import PostgresDialect
from .store import Store

_MIGRATION_LOCK = 0x4C454E53  # "LENS": one server migrates at a time

# COPY ... (FORMAT BINARY) framing: signature, flags, header extension length; each
# row of points is 5 fields, each a 4-byte length and the big-endian value
# (series_id bigint, row_index bigint, step float8, value float8, timestamp float8); -1 ends.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_ROW = struct.Struct(">hiqiqididid")
# A series_rollup row: series_id, level, block, then ROLLUP_COLS (q = bigint, d = float8).
_ROLLUP_TYPES = "qqqqqqddqddqddqdddd"
#: KEY_COLS then SERIES_SUMMARY_COLS
_SERIES_TYPES = ("text", "text", "text", "bigint", "text", "bigint", "bigint", "bigint", "float8", "float8", "bigint",
                 "float8", "float8", "bigint")
_ROLLUP_ROW = struct.Struct(">h" + "".join("i" + t for t in _ROLLUP_TYPES))
_ROLLUP_PG_TYPES = ["bigint" if t == "q" else "float8" for t in _ROLLUP_TYPES]
#: rollup rows written from arrays in one statement; more go through COPY (_write_rollup)
_ROLLUP_UNNEST_MAX = 200


def _array(values, pg_type: str):
    """A column of values as a parameter cast to ``pg_type[]``.

    The whole column goes as the array's text (``{1,2.5,NULL}``; a float's repr is
    exact, float8in reads it back to the same double; a string double-quoted with
    its backslashes and double quotes escaped, which is all the array syntax needs):
    psycopg's dumper of a Python list inspected and converted each element, ~1 us a
    value (~5 ms for one group commit's series summaries), the joined text ~0.15 us.
    """
    if pg_type == "text":
        return "{" + ",".join(["NULL" if v is None else _quoted(v) for v in values]) + "}"
    if None in values:
        return "{" + ",".join(["NULL" if v is None else repr(v) for v in values]) + "}"
    return "{" + ",".join(map(repr, values)) + "}"


def _quoted(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unnest(types) -> str:
    """``unnest(%s::t1[], %s::t2[], ...)``: the rows of :func:`_columns`, in one statement."""
    return f"unnest({', '.join(f'%s::{t}[]' for t in types)})"


def _columns(rows, types) -> list:
    """``rows`` as one :func:`_array` parameter per column."""
    return [_array(c, t) for c, t in zip(zip(*rows), types)]


def _rollup_row_with_nulls(r) -> bytes:
    """One binary COPY row of series_rollup where some fields are NULL (a block
    without finite values has no min/max point)."""
    parts = [struct.pack(">h", len(r))]
    for v, t in zip(r, _ROLLUP_TYPES):
        parts.append(struct.pack(">i", -1) if v is None else struct.pack(">i" + t, 8, v))
    return b"".join(parts)


def rank_lock_ids(keys: Sequence[SeriesKey]) -> list:
    """The advisory lock ids (sorted) of the ranks of runs that ``keys`` belong to:
    (workload, source, rank, run), hashed to a signed 64-bit integer."""
    ranks = {(k[0], k[1], k[3], k[4]) for k in keys}
    return sorted({int.from_bytes(hashlib.blake2b("\x1f".join(map(str, k)).encode(), digest_size=8).digest(),
                                  "big", signed=True) for k in ranks})


class PostgresStore(Store):
    """A Lens database in PostgreSQL."""

    kind = "postgresql"
    dialect = PostgresDialect()
    ingest_concurrency = 2
    caches_summaries = True
    optimistic_summaries = True
    _summary_lock = " ORDER BY id FOR UPDATE"
    _nonfinite_sql = "(value IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8))"
    retry_errors = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

    def __init__(self, dsn: str, pool_size: int = 24):
        super().__init__()
        self.counters["stale_summaries"] = 0  # see optimistic_summaries
        self.dsn = dsn
        self._pool: "queue.LifoQueue[psycopg.Connection]" = queue.LifoQueue()
        self._sem = threading.BoundedSemaphore(pool_size)
        self._closed = False
        self._migrate()

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True)
        # Staging for COPY; ON COMMIT DELETE ROWS empties it after every batch.
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS tp_stage (LIKE points) ON COMMIT DELETE ROWS")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS rollup_stage (LIKE series_rollup) ON COMMIT DELETE ROWS")
        return conn

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        if self._closed:
            raise RuntimeError("store is closed")
        self._sem.acquire()
        try:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                conn = self._connect()
            try:
                yield conn
            finally:
                # Back to the pool whenever its transaction ended (committed, or rolled back by
                # an exception: a stale summary, a deadlock); closed when it broke or is still
                # busy (a streamed read left early).  Closing it after every exception made each
                # retried batch pay a new connection and backend too.
                if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    self._pool.put(conn)
                else:
                    conn.close()
        finally:
            self._sem.release()

    def _migrate(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                             "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)")
                have = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
                schema.check_version(have)
                for v in range(have + 1, schema.LATEST + 1):
                    with conn.transaction():
                        for stmt in schema.statements(v, schema.POSTGRES_TYPES):
                            conn.execute(stmt)
                        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                                     (v, time.time()))
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def write_tx(self, on_commit=None):
        """A cursor inside one transaction on a pooled connection."""
        with self._conn() as conn:
            with conn.transaction():
                with conn.cursor() as cur:
                    yield cur
            if on_commit is not None:
                on_commit()

    def _stream_rows(self, cur, sql, params, size):
        # execute() would pull the whole result into client memory; stream() reads it
        # row by row (libpq single-row mode), so a streamed answer stays constant in size.
        buf = []
        for r in cur.stream(self._q(sql), params):
            buf.append(r)
            if len(buf) >= size:
                yield buf
                buf = []
        if buf:
            yield buf

    @contextmanager
    def read_cursor(self):
        """An autocommit cursor on a pooled connection."""
        with self._conn() as conn:
            with conn.cursor() as cur:
                yield cur

    def _lock_series(self, cur, keys: Sequence[SeriesKey]) -> None:
        if not keys:
            return
        # One lock per rank of a run (workload, source, rank, run), not per series: it
        # serialises the writers of each of its series as well, and a request (one rank's
        # ~10 series) then takes one lock instead of ten, hashed and held by the backend.
        ids = rank_lock_ids(keys)
        # Sorted ids, taken in array order: two batches never wait on each other in a cycle.
        cur.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(k, i) "
                    "ORDER BY i", (_array(ids, "bigint"),))
        cur.fetchall()

    # One statement for all rows, their columns sent as arrays: psycopg's executemany
    # sends one execution per row (pipelined, yet ~20 us of client Python and one
    # executor start in the backend each; a group commit of 50 requests had ~600).
    def _insert_rows(self, cur, head, types, tail, rows):
        if rows:
            cur.execute(f"{head} SELECT * FROM {_unnest(types)} {tail}", _columns(rows, types))

    def _summaries_by_id(self, cur, ids):
        cur.execute(f"SELECT {SUMMARY_READ} FROM series WHERE id = ANY(%s::bigint[]){self._summary_lock}",
                    (_array(ids, "bigint"),))
        return cur.fetchall()

    # "s.id = ANY(ids)" lets the planner find the rows by their primary key: joined to
    # the unnest alone it hashed a sequential scan of every series (14 ms a group at
    # 10,000 series, growing with the table).
    # The rev check: a row another transaction updated first (READ COMMITTED re-reads it
    # after that one commits) no longer matches, and is not written.
    def _update_summaries(self, cur, rows):
        if rows:
            names = [c for c, _ in self.SUMMARY_UPDATE] + ["id", "rev"]
            types = [t for _, t in self.SUMMARY_UPDATE] + ["bigint", "bigint"]
            params = _columns(rows, types)
            cur.execute(f"UPDATE series AS s SET {', '.join(f'{c} = u.{c}' for c in names[:-2])}, rev = s.rev + 1 "
                        f"FROM {_unnest(types)} AS u({', '.join(names)}) WHERE s.id = u.id AND s.rev = u.rev "
                        "AND s.id = ANY(%s::bigint[])", params + params[-2:-1])
            if cur.rowcount != len(rows):
                raise StaleSummaries(f"{len(rows) - cur.rowcount} of {len(rows)} series summaries changed")

    def _write_points(self, cur, new, updates) -> None:
        cols = POINT_COLS
        if new:
            # Points proven absent under the series locks are COPYed straight into the
            # table in COPY's binary format, one struct.pack per row: formatting floats
            # as text (repr) cost ~3.5 us per row, the pack ~0.6 us, and the database
            # server then parses no float text either.
            buf = [_COPY_HEADER]
            buf.extend(enc if enc is not None else self._encode_points(sid, pts) for sid, pts, enc in new)
            buf.append(_COPY_TRAILER)
            with cur.copy(f"COPY points ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(b"".join(buf))
        if updates:
            with cur.copy(f"COPY tp_stage ({cols}) FROM STDIN") as cp:
                for r in updates:
                    cp.write_row(r)
            cur.execute(f"INSERT INTO points ({cols}) SELECT {cols} FROM tp_stage "
                        "ON CONFLICT (series_id, row_index) DO UPDATE SET step = excluded.step, "
                        "value = excluded.value, timestamp = excluded.timestamp")

    def _encode_points(self, sid, pts):
        pk = _ROW.pack
        return b"".join([pk(5, 8, sid, 8, row, 8, vt[2], 8, vt[0], 8, vt[1]) for row, vt in pts.items()])

    def _insert_series(self, cur, rows):
        # One statement for all new series of the batch, ids returned with their keys.
        cur.execute(f"INSERT INTO series ({KEY_COLS}, {SERIES_SUMMARY_COLS}) "
                    f"SELECT * FROM {_unnest(_SERIES_TYPES)} "
                    "RETURNING workload_uid, data_source, metric_name, rank, run_id, id",
                    _columns(rows, _SERIES_TYPES))
        return {tuple(r[:5]): r[5] for r in cur.fetchall()}

    def _write_rollup(self, cur, rows):
        cols = f"series_id, level, block, {ROLLUP_COLS}"
        sets = ", ".join(f"{c} = excluded.{c}" for c in ROLLUP_COLS.split(", "))
        if len(rows) <= _ROLLUP_UNNEST_MAX:
            # The rows of closed blocks (one a series every 64 rows): one statement from
            # arrays.  A lockstep fleet closes a block on every series in the same second,
            # where the staging path's three round trips (COPY, its end, the upsert) and
            # the staging table's truncation at commit were that second's extra work.
            cur.execute(f"INSERT INTO series_rollup ({cols}) SELECT * FROM {_unnest(_ROLLUP_PG_TYPES)} "
                        f"ON CONFLICT (series_id, level, block) DO UPDATE SET {sets}",
                        _columns(rows, _ROLLUP_PG_TYPES))
            return
        # Many rows (a series rolled up from its stored points): the same path as points,
        # COPY into a staging table and one upsert statement.  Binary COPY like the points:
        # write_row formatted every value as text (~12 us a row, ~700 rows per batch of 10
        # rolled-up series).
        buf = [_COPY_HEADER]
        full = _ROLLUP_ROW.pack
        args = [8] * 38
        for r in rows:
            if None in r:
                buf.append(_rollup_row_with_nulls(r))
            else:
                args[1::2] = r
                buf.append(full(19, *args))
        buf.append(_COPY_TRAILER)
        with cur.copy(f"COPY rollup_stage ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(b"".join(buf))
        cur.execute(f"INSERT INTO series_rollup ({cols}) SELECT {cols} FROM rollup_stage "
                    f"ON CONFLICT (series_id, level, block) DO UPDATE SET {sets}")

    def _fetch_raw_many(self, cur, requests):
        # Every series' ranges in one statement: a round trip per series would
        # dominate a batch that touches many rolled-up series.
        out: Dict[int, list] = {}
        if not requests:
            return out
        # LATERAL with OFFSET 0 (which keeps the planner from flattening it back
        # into a join): one index range scan per range.  As a plain join the
        # planner, which cannot see how narrow the ranges are, switched to a hash
        # join over a parallel sequential scan of all points once the table grew:
        # 220 ms a batch at 2.4 million points (the collapse of sustained ingest).
        cur.execute("SELECT u.sid, t.row_index, t.value, t.timestamp "
                    "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS u(sid, a, b) "
                    "CROSS JOIN LATERAL (SELECT row_index, value, timestamp FROM points "
                    "WHERE series_id = u.sid AND row_index BETWEEN u.a AND u.b OFFSET 0) t",
                    [[r[0] for r in requests], [r[1] for r in requests], [r[2] for r in requests]])
        for sid, it, v, ts in cur.fetchall():
            out.setdefault(sid, []).append((it, v, ts))
        for pts in out.values():
            pts.sort(key=itemgetter(0))
        return out

    def _fetch_rollup_many(self, cur, requests):
        out: Dict[int, dict] = {}
        flat = [(sid, level, b) for sid, needs in requests for level, blocks in needs.items() for b in blocks]
        if not flat:
            return out
        cols = ", ".join("t." + c for c in ROLLUP_COLS.split(", "))
        cur.execute(f"SELECT t.series_id, t.level, t.block, {cols} "
                    "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS u(sid, a, b) "
                    "JOIN series_rollup t ON t.series_id = u.sid AND t.level = u.a AND t.block = u.b",
                    [[f[0] for f in flat], [f[1] for f in flat], [f[2] for f in flat]])
        for row in cur.fetchall():
            out.setdefault(row[0], {})[(row[1], row[2])] = self._rollup_agg(row[3:])
        return out

    def close(self) -> None:
        """Close pooled connections."""
        self._closed = True
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break
