"""PostgreSQL backend (psycopg 3): for clusters that outgrow one SQLite file.

Points go in with COPY into a per-connection temporary staging table and one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` (keys are unique within a batch
already, so the statement never touches a row twice).  Concurrent requests run
in parallel transactions; writers of the same series are serialised with
transaction-scoped advisory locks taken in key order, because the summary and
rollup maintenance reads what earlier batches of that series wrote.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, Sequence

import psycopg

from . import schema
from .base import KEY_COLS, ROLLUP_COLS, SeriesKey, Store

_MIGRATION_LOCK = 0x4C454E53  # "LENS": one server migrates at a time
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(s: str) -> str:
    """Escape a value for COPY text format."""
    return s.translate(_COPY_ESCAPES)


class PostgresStore(Store):
    """A Lens database in PostgreSQL."""

    kind = "postgresql"
    ingest_concurrency = 2
    _nonfinite_sql = "(value IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8))"
    retry_errors = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

    def __init__(self, dsn: str, pool_size: int = 24):
        self.dsn = dsn
        self._pool: "queue.LifoQueue[psycopg.Connection]" = queue.LifoQueue()
        self._sem = threading.BoundedSemaphore(pool_size)
        self._closed = False
        self._migrate()

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True)
        # Staging for COPY; ON COMMIT DELETE ROWS empties it after every batch.
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS tp_stage (LIKE training_performance) ON COMMIT DELETE ROWS")
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
            ok = False
            try:
                yield conn
                ok = True
            finally:
                if ok and not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
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
    def write_tx(self):
        """A cursor inside one transaction on a pooled connection."""
        with self._conn() as conn:
            with conn.transaction():
                with conn.cursor() as cur:
                    yield cur

    @contextmanager
    def read_cursor(self):
        """An autocommit cursor on a pooled connection."""
        with self._conn() as conn:
            with conn.cursor() as cur:
                yield cur

    def _lock_series(self, cur, keys: Sequence[SeriesKey]) -> None:
        if not keys:
            return
        ids = sorted({int.from_bytes(hashlib.blake2b("\x1f".join(map(str, k)).encode(), digest_size=8).digest(),
                                     "big", signed=True) for k in keys})
        # Sorted ids, taken in array order: two batches never wait on each other in a cycle.
        cur.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(k, i) "
                    "ORDER BY i", (ids,))
        cur.fetchall()

    def _write_points(self, cur, new, updates) -> None:
        cols = f"{KEY_COLS}, iteration, value, timestamp"
        if new:
            # Points proven absent under the series locks are COPYed straight into the
            # table, formatted here as COPY text: psycopg's write_row costs several
            # microseconds per row, a join per series far less.
            buf = []
            for key, pts in new:
                prefix = "\t".join(_copy_text(str(f)) for f in key) + "\t"
                buf.append("".join(f"{prefix}{st}\t{v!r}\t{ts!r}\n" for st, v, ts in pts))
            with cur.copy(f"COPY training_performance ({cols}) FROM STDIN") as cp:
                cp.write("".join(buf).encode())
        if updates:
            with cur.copy(f"COPY tp_stage ({cols}) FROM STDIN") as cp:
                for r in updates:
                    cp.write_row(r)
            cur.execute(f"INSERT INTO training_performance ({cols}) SELECT {cols} FROM tp_stage "
                        f"ON CONFLICT ({KEY_COLS}, iteration) DO UPDATE SET value = excluded.value, "
                        "timestamp = excluded.timestamp")

    def _write_rollup(self, cur, rows):
        # Same path as points: COPY into a staging table, one upsert statement.
        cols = f"{KEY_COLS}, level, block, {ROLLUP_COLS}"
        with cur.copy(f"COPY rollup_stage ({cols}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        sets = ", ".join(f"{c} = excluded.{c}" for c in ROLLUP_COLS.split(", "))
        cur.execute(f"INSERT INTO series_rollup ({cols}) SELECT {cols} FROM rollup_stage "
                    f"ON CONFLICT ({KEY_COLS}, level, block) DO UPDATE SET {sets}")

    _UNNEST_KEYS = ("unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::bigint[], "
                    "%s::bigint[]) WITH ORDINALITY AS u(w, d, m, r, run, a, b, i)")
    _JOIN_KEYS = ("t.workload_uid = u.w AND t.data_source = u.d AND t.metric_name = u.m AND t.rank = u.r "
                  "AND t.run_id = u.run")

    @staticmethod
    def _columns(requests, extra_a, extra_b):
        keys = [r[0] for r in requests]
        return [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys],
                [k[4] for k in keys], extra_a, extra_b]

    def _fetch_raw_many(self, cur, requests):
        # Every series' ranges in one statement: a round trip per series would
        # dominate a batch that touches many rolled-up series.
        out: Dict[SeriesKey, list] = {}
        if not requests:
            return out
        cur.execute(f"SELECT u.i, t.iteration, t.value, t.timestamp FROM {self._UNNEST_KEYS} "
                    f"JOIN training_performance t ON {self._JOIN_KEYS} AND t.iteration BETWEEN u.a AND u.b "
                    "ORDER BY u.i, t.iteration",
                    self._columns(requests, [r[1] for r in requests], [r[2] for r in requests]))
        for i, it, v, ts in cur.fetchall():
            out.setdefault(requests[i - 1][0], []).append((it, v, ts))
        for pts in out.values():
            pts.sort(key=lambda p: p[0])
        return out

    def _fetch_rollup_many(self, cur, requests):
        out: Dict[SeriesKey, dict] = {}
        flat = [(key, level, b) for key, needs in requests for level, blocks in needs.items() for b in blocks]
        if not flat:
            return out
        cols = ", ".join("t." + c for c in ROLLUP_COLS.split(", "))
        cur.execute(f"SELECT u.i, t.level, t.block, {cols} FROM {self._UNNEST_KEYS} "
                    f"JOIN series_rollup t ON {self._JOIN_KEYS} AND t.level = u.a AND t.block = u.b",
                    self._columns(flat, [f[1] for f in flat], [f[2] for f in flat]))
        for row in cur.fetchall():
            out.setdefault(flat[row[0] - 1][0], {})[(row[1], row[2])] = self._rollup_agg(row[3:])
        return out

    def close(self) -> None:
        """Close pooled connections."""
        self._closed = True
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break
