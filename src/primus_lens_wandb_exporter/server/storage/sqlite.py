"""SQLite backend: one file, WAL journal, one writer at a time.

WAL lets readers run while a batch commits.  ``synchronous=NORMAL`` in WAL mode
makes a commit durable against a crash of the server process (kill -9): the
WAL is written before the commit returns and only its fsync is deferred, so
only an OS crash or power loss can drop the last transactions.  Pass
``synchronous="FULL"`` for that too.
"""

from __future__ import annotations

import logging
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
from .model import KEY_COLS, POINT_COLS, SERIES_SUMMARY_COLS, point_rows
from .runs_filter import SQLiteDialect
from .store import Store

log = logging.getLogger("primus_lens.server")

#: The background checkpoint looks at the WAL this often (seconds) ...
CHECKPOINT_INTERVAL = 0.5
#: ... and copies it into the database once it is this large.
CHECKPOINT_BYTES = 16 << 20
#: Once the log is this long the WAL is started over.  Under sustained ingest the
#: background checkpoint copies most of the log but can never restart it: the log
#: restarts only when a writer begins after a complete checkpoint, and the writer has
#: always committed more frames by then (538 MB of WAL beside a 7 MB database after
#: 12 s of a closed-loop fleet).  So the thread catches up (passes, each followed by
#: a sync of the database file, until one finds almost nothing new) and then asks the
#: writer to complete the checkpoint after its next commit, under its write lock:
#: what is left to copy and sync is what was committed during the last pass.  Without
#: the catch-up that checkpoint held the lock for 70-120 ms: SQLite syncs the database
#: file only in a checkpoint that reaches the end of the log, which under sustained
#: ingest is only ever the writer's, so it synced every page copied since the last one.
WAL_LIMIT = 64 << 20
#: Past this WAL file size the writer checkpoints whether or not the thread caught up
#: (it competes for the same CPUs): the WAL stays bounded, at the price of a commit that
#: copies much of it while holding the write lock.  A log that starts over cuts the
#: file back to half of it (``journal_size_limit``; a log restarts at ~WAL_LIMIT plus
#: a catch-up's growth, so the file is normally not cut, which would cost the writer
#: 10-20 ms).
WAL_HARD_LIMIT = 4 * WAL_LIMIT
#: A catch-up stops after a pass this short (seconds: few commits came during it) ...
CATCH_UP_PASS = 0.02
#: ... or after this many passes.
CATCH_UP_PASSES = 4

#: Syncs a file's data given a read-only descriptor (Linux: fdatasync; macOS: fsync);
#: None on Windows (fsync needs a writable descriptor there): only SQLite syncs.
_sync_file = getattr(os, "fdatasync", os.fsync) if os.name != "nt" else None

#: Rows per multi-row INSERT, largest first; the last (1) takes whatever is left.
_CHUNKS = (250, 25, 1)


_INSERT_SQL = {k: f"INSERT INTO points ({POINT_COLS}) VALUES "
                  + ", ".join(["(?, ?, ?, ?, ?)"] * k) for k in _CHUNKS}


class SQLiteStore(Store):
    """A Lens database in one SQLite file."""

    kind = "sqlite"
    dialect = SQLiteDialect()
    caches_summaries = True  # see _sole_writer

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
        self._data_version = None  # the writer's PRAGMA data_version at its last write transaction
        self._stop = threading.Event()
        self.counters.update(checkpoints=0, checkpoints_busy=0, checkpoints_inline=0, checkpoint_errors=0)
        self._checkpointer = None
        #: The WAL's ``_wal_state()`` when a checkpoint last copied all of it.
        self.checkpointed = (0, 0)
        #: Set by the background thread once it has caught up with a long log; the
        #: writer then completes the checkpoint after its next commit.
        self.restart_wanted = False
        self._page_size = self._writer.execute("PRAGMA page_size").fetchone()[0]
        # The database file, for the thread's syncs.  Opened once and closed only after
        # every connection: closing any descriptor of the file drops this process's
        # POSIX locks on it, SQLite's included.
        self._db_fd = os.open(path, os.O_RDONLY) if path != ":memory:" and _sync_file else None
        if path != ":memory:":
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="lens-sqlite-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()

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
        # No checkpoint in the commit that happens to cross the threshold: it
        # copied tens of MiB of WAL into the database while holding the write
        # lock, stalling every writer.  A background thread checkpoints instead.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={WAL_HARD_LIMIT // 2}")
        return conn

    def _wal_bytes(self) -> int:
        return self._wal_state()[1]

    def _wal_state(self) -> tuple[int, int]:
        """(modification time in ns, size) of the WAL file; (0, 0) when there is none."""
        try:
            st = os.stat(self.path + "-wal")
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database off the write path.

        PASSIVE checkpoints run beside readers and writers (SQLite serialises a
        checkpoint with other checkpoints only), so a writer never waits for one.
        """
        conn = None
        while not self._stop.wait(CHECKPOINT_INTERVAL):
            wal = self._wal_state()
            # The WAL file keeps its size after the log restarts, so its size alone
            # would checkpoint an already copied log every interval, and a checkpoint
            # running when a writer begins keeps that writer from restarting the log.
            if wal[1] < CHECKPOINT_BYTES or wal == self.checkpointed:
                continue
            try:
                if conn is None:
                    conn = self._connect()
                frames = self._checkpoint_pass(conn)
                if frames is None or frames * (self._page_size + 24) < WAL_LIMIT or self.restart_wanted:
                    continue
                for _ in range(CATCH_UP_PASSES - 1):
                    t = time.monotonic()
                    if self._checkpoint_pass(conn) is None:
                        break
                    if time.monotonic() - t < CATCH_UP_PASS:
                        self.restart_wanted = True
                        break
                else:
                    self.restart_wanted = True  # the writer's share is a long pass's worth
            except (sqlite3.Error, OSError) as e:
                self.counters["checkpoint_errors"] += 1
                log.warning("WAL checkpoint failed (will retry): %s", e)
        if conn is not None:
            conn.close()

    def _checkpoint_pass(self, conn):
        """One PASSIVE checkpoint and a sync of the database file: the frames in the
        log when it ran, or None when it could not copy all of them."""
        wal = self._wal_state()
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.counters["checkpoints"] += 1
        self.counters["checkpoints_busy"] += bool(busy)  # another process's checkpoint ran
        # SQLite syncs the database only after a checkpoint that reaches the end of the
        # log, which under ingest is only ever the writer's: the pages copied here are
        # synced now, off the write lock, instead of there, under it.
        if self._db_fd is not None:
            _sync_file(self._db_fd)
        if busy or frames != copied:
            return None
        if self._wal_state() == wal:
            self.checkpointed = wal
        return frames

    def _checkpoint_if_wal_huge(self, cur) -> None:
        # After the thread's catch-up (a pass's worth of frames left to copy) or past
        # WAL_HARD_LIMIT, the writer completes the checkpoint, so its next transaction
        # restarts the log: the WAL stays bounded, and the write lock is held for a
        # short copy only.  Runs under the write lock.
        if self.restart_wanted or self._wal_bytes() > WAL_HARD_LIMIT:
            self.restart_wanted = False
            cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.counters["checkpoints_inline"] += 1

    def _migrate(self) -> None:
        with self._write_lock:
            c = self._writer
            # All in one IMMEDIATE transaction: a second server starting on the same
            # file waits here and then finds the migrations applied.
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
                have = c.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
                schema.check_version(have)
                for v in range(have + 1, schema.LATEST + 1):
                    for stmt in schema.statements(v, schema.SQLITE_TYPES):
                        c.execute(stmt)
                    c.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (v, time.time()))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    @contextmanager
    def write_tx(self, on_commit=None) -> Iterator[sqlite3.Cursor]:
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
            if on_commit is not None:
                on_commit()  # still under the write lock
            try:
                self._checkpoint_if_wal_huge(cur)
            except sqlite3.Error as e:
                # The transaction is committed: its request succeeded.  The WAL is
                # checkpointed again after the next commit.
                self.counters["checkpoint_errors"] += 1
                log.warning("inline WAL checkpoint failed (will retry): %s", e)

    def _sole_writer(self, cur) -> bool:
        # data_version changes when another connection (another --workers process, a
        # second server, the sqlite3 shell) commits, never for this connection's own
        # commits; read under the write lock, so nobody can commit in between.
        v = cur.execute("PRAGMA data_version").fetchone()[0]
        same = v == self._data_version
        self._data_version = v
        return same

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
            # (250 rows x 5 columns stays under SQLite's 32,766 parameters.)
            flat = list(chain.from_iterable(enc if enc is not None else self._encode_points(sid, pts)
                                            for sid, pts, enc in new))
            pos = 0
            for k in _CHUNKS:
                width = 5 * k
                n = (len(flat) - pos) // width
                if n:
                    it = iter(flat[pos:pos + n * width])
                    cur.executemany(_INSERT_SQL[k], zip(*[it] * width))
                    pos += n * width
        self._many(cur, f"INSERT INTO points ({POINT_COLS}) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (series_id, row_index) DO UPDATE SET step = excluded.step, "
                        "value = excluded.value, timestamp = excluded.timestamp", updates)

    def _encode_points(self, sid, pts):
        # Flat (series_id, row, step, value, ts, series_id, ...) parameters, sliced into
        # multi-row INSERTs by _write_points.
        if len(pts) == 1:  # the exporter's one point per metric per request: no iterator chain
            (row, (v, ts, step)), = pts.items()
            return [sid, row, step, v, ts]
        return list(chain.from_iterable(point_rows(sid, pts)))

    def _insert_series(self, cur, rows):
        # One writer: each new summary row's id is its rowid.
        sql = (f"INSERT INTO series ({KEY_COLS}, {SERIES_SUMMARY_COLS}) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        out = {}
        for r in rows:
            cur.execute(sql, r)
            out[tuple(r[:5])] = cur.lastrowid
        return out

    def close(self) -> None:
        """Close every connection (call once, at shutdown)."""
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(30)
        with self._conns_lock:
            for c in self._all_conns:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._all_conns = []
        if self._db_fd is not None:  # after the connections (see __init__)
            os.close(self._db_fd)
            self._db_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    #: key of the row that keeps the highest series id taken (rank -1: no client can send it)
    _ID_TOMBSTONE = ("\x00lens-highest-deleted-series-id", "", "", -1, "")

    def _delete_series_rows(self, cur, uid):
        # SQLite gives a new row max(id) + 1: were the highest id deleted, the next
        # new series would get it again, and another --workers process's cached
        # rollup tail of the deleted series (keyed by id, see caches.TailCache)
        # could pass for the new one's.  So that row stays, re-keyed as a
        # tombstone with no points, and series ids are never handed out twice.
        cur.execute("SELECT id, workload_uid FROM series ORDER BY id DESC LIMIT 1")
        top = cur.fetchone()
        if top is None or top[1] != uid:
            cur.execute("DELETE FROM series WHERE workload_uid = ?", (uid,))
            return cur.rowcount
        cur.execute("DELETE FROM series WHERE workload_uid = ? AND id != ?", (uid, top[0]))
        n = cur.rowcount
        t = self._ID_TOMBSTONE
        cur.execute("DELETE FROM series WHERE workload_uid = ? AND rank = ?", (t[0], t[3]))  # the previous one
        cur.execute("UPDATE series SET workload_uid = ?, data_source = ?, metric_name = ?, rank = ?, run_id = ?, "
                    "count = 0 WHERE id = ?", (*t, top[0]))
        return n + 1
