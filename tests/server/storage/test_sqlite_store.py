"""SQLite specifics: the write-ahead log is checkpointed in the background."""

from __future__ import annotations

import os
import time

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
        assert os.path.getsize(path) > size0 + (1 << 20)  # the points are in the database file now
        # Once a checkpoint has copied the whole log it is not run again until a
        # commit changes the WAL, and that next commit starts the log over
        # instead of growing the file.
        while store.checkpointed != store._wal_state() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.checkpointed == store._wal_state()
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


def test_health_reports_storage_counters(lens_server):
    h = lens_server.get("/health").json()
    assert h["status"] == "ok"
    assert h["storage"]["ingest_retries"] == 0
    if lens_server.db_kind == "sqlite":
        assert h["storage"]["checkpoint_errors"] == 0 and "checkpoints" in h["storage"]
