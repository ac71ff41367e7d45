"""Storage for the Lens server: one interface (:class:`Store`), SQLite and PostgreSQL."""

from __future__ import annotations

import os

from .model import IngestResult, SeriesBatch
from .store import Store

__all__ = ["IngestResult", "SeriesBatch", "Store", "open_store", "default_sqlite_path", "normalize_db_url"]


def default_sqlite_path() -> str:
    """The default database file, under the user's data directory."""
    import platformdirs

    return os.path.join(platformdirs.user_data_dir("primus-lens", appauthor=False), "lens.db")


def normalize_db_url(db: str | None) -> str:
    """Turn ``--db`` (empty, a path, ``sqlite:///PATH`` or ``postgresql://...``) into a URL."""
    if not db:
        return "sqlite:///" + default_sqlite_path()
    if db.startswith(("postgresql://", "postgres://", "sqlite://")):
        return db
    if "://" in db:
        raise ValueError(f"unsupported database URL {db!r}: use sqlite:///PATH or postgresql://...")
    return "sqlite:///" + os.path.abspath(db)


def open_store(url: str) -> Store:
    """Open (and migrate) the database named by ``url``."""
    url = normalize_db_url(url)
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        # sqlite:///tmp/x.db and sqlite:////tmp/x.db both mean /tmp/x.db (the
        # second is what normalize_db_url writes for a plain absolute path); a
        # relative file is given as a plain path (--db lens.db).
        path = url[len("sqlite://"):]
        if path.startswith("//"):
            path = path[1:]
        return SQLiteStore(path if path not in ("", "/") else default_sqlite_path())
    from .postgres import PostgresStore

    return PostgresStore(url)
