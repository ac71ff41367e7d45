"""SQLite backend: one file, WAL journal, one writer at a time.

WAL lets readers run while a batch commits.  ``synchronous=NORMAL`` in WAL mode
makes a commit durable against a crash of the server process (kill -9): the
WAL is written before the commit returns and only its fsync is deferred, so
only an OS crash or power loss can drop the last transactions.  Pass
``synchronous="FULL"`` for that too.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from itertools import chain
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: one process only
    fcntl = None

from . import schema
from .base import KEY_COLS, Store, point_rows


#: Rows per multi-row INSERT, largest first; the last (1) takes whatever is left.
_CHUNKS = (250, 25, 1)


_INSERT_SQL = {k: "INSERT INTO points (series_id, iteration, value, timestamp) VALUES "
                  + ", ".join(["(?, ?, ?, ?)"] * k) for k in _CHUNKS}


class SQLiteStore(Store):
    """A Lens database in one SQLite file."""

    kind = "sqlite"

    def __init__(self, path: str, synchronous: str = "NORMAL"):
        super().__init__()
        self.path = path
        self._synchronous = synchronous
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._write_lock = threading.Lock()
        self._lock_fd = None
        if path != ":memory:" and fcntl is not None:
            self._lock_fd = os.open(os.path.abspath(path) + "-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._writer = self._connect()
        self._local = threading.local()
        self._all_conns = [self._writer]
        self._conns_lock = threading.Lock()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is
        # exactly one transaction.  check_same_thread=False: the writer is used by
        # whichever threadpool thread holds the write lock.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
        conn.execute("PRAGMA temp_store=MEMORY")
        # Checkpoint the WAL every ~80 MiB instead of every 4 MiB: far fewer
        # checkpoints stall the single writer during sustained ingest.
        conn.execute("PRAGMA wal_autocheckpoint=20000")
        return conn

    def _migrate(self) -> None:
        with self._write_lock:
            c = self._writer
            # All in one IMMEDIATE transaction: a second server starting on the same
            # file waits here and then finds the migrations applied.
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
                have = c.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
                for v in range(have + 1, schema.LATEST + 1):
                    for stmt in schema.statements(v, schema.SQLITE_TYPES):
                        c.execute(stmt)
                    c.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (v, time.time()))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    @contextmanager
    def write_tx(self) -> Iterator[sqlite3.Cursor]:
        """The single writer connection, inside BEGIN IMMEDIATE ... COMMIT."""
        with self._write_lock, self._file_lock():
            cur = self._writer.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    @contextmanager
    def _file_lock(self):
        """Serialise writers of other server processes (``--workers``) on the same file.

        SQLite would serialise them too, but its busy handler sleeps and polls
        (1 ms, 2 ms, 5 ms ... 100 ms); a kernel lock wakes the next writer at once.
        """
        if self._lock_fd is None:
            yield
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def read_cursor(self) -> Iterator[sqlite3.Cursor]:
        """A per-thread read connection; a read transaction sees one snapshot."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._conns_lock:
                self._all_conns.append(conn)
        cur = conn.cursor()
        cur.execute("BEGIN")
        try:
            yield cur
        finally:
            cur.execute("COMMIT")

    def _write_points(self, cur, new, updates) -> None:
        # Writes are serial (one lock), so points proven absent go in with a plain
        # INSERT; re-sent points update in place.
        if new:
            # Multi-row VALUES: one statement execution inserts up to 250 rows (_CHUNKS),
            # which costs SQLite about a third less than one execution per row (5,000
            # rows: ~5.6 vs ~8.8 ms CPU).  The tail goes in smaller statements.
            flat = list(chain.from_iterable(chain.from_iterable(point_rows(sid, pts) for sid, pts in new)))
            pos = 0
            for k in _CHUNKS:
                width = 4 * k
                n = (len(flat) - pos) // width
                if n:
                    it = iter(flat[pos:pos + n * width])
                    cur.executemany(_INSERT_SQL[k], zip(*[it] * width))
                    pos += n * width
        self._many(cur, "INSERT INTO points (series_id, iteration, value, timestamp) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (series_id, iteration) DO UPDATE SET value = excluded.value, "
                        "timestamp = excluded.timestamp", updates)

    def _insert_series(self, cur, rows):
        # One writer: each new summary row's id is its rowid.
        sql = (f"INSERT INTO series ({KEY_COLS}, count, min_step, max_step, first_ts, last_ts, has_rollup) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        out = {}
        for r in rows:
            cur.execute(sql, r)
            out[tuple(r[:5])] = cur.lastrowid
        return out

    def close(self) -> None:
        """Close every connection (call once, at shutdown)."""
        with self._conns_lock:
            for c in self._all_conns:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._all_conns = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
