"""SQLite specifics: the write-ahead log is checkpointed in the background."""

from __future__ import annotations

import os
import time

from helpers.sqlite_wal import frames_left

from primus_lens_wandb_exporter.server.storage import SeriesBatch, sqlite
from primus_lens_wandb_exporter.server.storage.sqlite import SQLiteStore


def _batch(lo, n=2000):
    return SeriesBatch("wl-wal", "wandb", "run", 0, "", "", "",
                        {f"m{k}": {s: (s * 0.5 + k, 1.7e12 + s, s) for s in range(lo, lo + n)} for k in range(5)})


def test_wal_is_checkpointed_off_the_write_path(tmp_path, monkeypatch):
    # Commits never checkpoint (wal_autocheckpoint=0, a checkpoint used to stall
    # every writer for tens of ms); the background thread copies the WAL into
    # the database file once it passes CHECKPOINT_BYTES.
    monkeypatch.setattr(sqlite, "CHECKPOINT_BYTES", 256 << 10)
    monkeypatch.setattr(sqlite, "CHECKPOINT_INTERVAL", 0.05)
    path = str(tmp_path / "lens.db")
    store = SQLiteStore(path)
    try:
        with store.read_cursor() as cur:
            assert cur.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        size0 = os.path.getsize(path)
        for i in range(10):
            store.ingest([_batch(i * 2000)])
        assert store._wal_bytes() > sqlite.CHECKPOINT_BYTES
        deadline = time.monotonic() + 30
        while store.stats()["checkpoints"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = store.stats()
        assert stats["checkpoints"] >= 1 and stats["checkpoint_errors"] == 0, stats
        assert stats["checkpoints_inline"] == 0
        # Once a checkpoint has copied the whole log it is not run again until a
        # commit changes the WAL, and that next commit starts the log over
        # instead of growing the file.  (The first pass may have run while the
        # loop above was still writing: the size is checked once the log is copied.)
        while store.checkpointed != store._wal_state() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.checkpointed == store._wal_state()
        assert os.path.getsize(path) > size0 + (1 << 20)  # the points are in the database file now
        done = store.stats()["checkpoints"]
        time.sleep(10 * sqlite.CHECKPOINT_INTERVAL)
        assert store.stats()["checkpoints"] == done
        wal = store._wal_bytes()
        store.ingest([_batch(100_000)])
        assert store._wal_bytes() <= wal
        while store.stats()["checkpoints"] == done and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.stats()["checkpoints"] > done  # the new commit is checkpointed in turn
    finally:
        store.close()
    assert not store._checkpointer.is_alive()


def test_wal_stays_bounded_under_sustained_ingest(tmp_path, monkeypatch):
    # Back-to-back commits never leave the background checkpoint a moment to restart
    # the log, so it grew without bound (538 MB for a 7 MB database in a 12 s
    # closed-loop fleet run) and, past the old 512 MiB limit, every commit ran an
    # inline checkpoint.  The writer now completes one past WAL_LIMIT and the file
    # is cut back when the log restarts.
    monkeypatch.setattr(sqlite, "WAL_LIMIT", 1 << 20)
    monkeypatch.setattr(sqlite, "WAL_HARD_LIMIT", 3 << 20)
    monkeypatch.setattr(sqlite, "CHECKPOINT_BYTES", 256 << 10)
    monkeypatch.setattr(sqlite, "CHECKPOINT_INTERVAL", 0.05)
    store = SQLiteStore(str(tmp_path / "lens.db"))
    try:
        sizes = []
        for i in range(150):
            store.ingest([_batch(i * 400, 400)])  # ~0.1 MiB of WAL a commit
            sizes.append(store._wal_bytes())
        stats = store.stats()
        assert max(sizes) < 2 * sqlite.WAL_HARD_LIMIT, max(sizes)  # without the writer's checkpoint: ~48 MiB
        assert 1 <= stats["checkpoints_inline"] < 50, stats  # not after every commit
        with store.read_cursor() as cur:
            assert cur.execute("SELECT SUM(count) FROM series").fetchone()[0] == 150 * 400 * 5
    finally:
        store.close()


def test_writer_checkpoint_finds_the_log_already_copied(tmp_path, monkeypatch):
    # The writer's checkpoint, the one that lets the log restart, holds the write lock.
    # It used to run as soon as the WAL passed its limit and copy (and sync) whatever the
    # background thread had not yet: up to the whole log, 70-120 ms of every writer
    # waiting in a 1,000-rank fleet.  The thread now catches up first and then asks for
    # it: what is left is what came during the thread's last pass.
    monkeypatch.setattr(sqlite, "WAL_LIMIT", 4 << 20)
    monkeypatch.setattr(sqlite, "WAL_HARD_LIMIT", 256 << 20)  # never reached here
    monkeypatch.setattr(sqlite, "CHECKPOINT_BYTES", 64 << 10)
    synced = []
    sync = sqlite._sync_file
    monkeypatch.setattr(sqlite, "_sync_file", lambda fd: synced.append(fd) or sync(fd))
    store = SQLiteStore(str(tmp_path / "lens.db"))
    left = []
    inline = store._checkpoint_if_wal_huge

    def watched(cur):
        before, n = frames_left(store.path), store.counters["checkpoints_inline"]
        inline(cur)
        if store.counters["checkpoints_inline"] > n:
            left.append(before)

    store._checkpoint_if_wal_huge = watched
    try:
        limit_frames = sqlite.WAL_LIMIT // (store._page_size + 24)
        deadline = time.monotonic() + 60
        commits = 0
        while len(left) < 3 and time.monotonic() < deadline:
            # ~0.1 MiB of WAL a commit, back to back: the log outgrows the limit between
            # two of the thread's periodic passes, as in a fleet
            store.ingest([_batch(commits * 400, 400)])
            commits += 1
        assert len(left) >= 3, (left, store.stats())
        assert len(left) < commits / 10  # not after every commit
        # SQLite syncs the database file only in a checkpoint that reaches the end of the
        # log (under ingest: only the writer's); the thread syncs what it copied itself.
        assert synced.count(store._db_fd) >= store.stats()["checkpoints"] > 0
        # Each found at most a pass's worth of commits to copy, not the log since its
        # restart (what the writer's checkpoint found before: the limit's worth or more).
        # A pass's worth is wall-clock time: one slow fsync of the thread's while the
        # other test worker writes lets one sample grow, so the median carries the claim.
        assert sorted(left)[len(left) // 2] < limit_frames // 2 and max(left) < limit_frames, (left, limit_frames)
    finally:
        store.close()


def test_health_reports_storage_counters(lens_server):
    h = lens_server.get("/health").json()
    assert h["status"] == "ok"
    assert h["storage"]["ingest_retries"] == 0
    if lens_server.db_kind == "sqlite":
        assert h["storage"]["checkpoint_errors"] == 0 and "checkpoints" in h["storage"]
