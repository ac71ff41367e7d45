"""What SQLite itself recorded about its write-ahead log: the pages the WAL file's frames
hold, by table, and how many frames the wal-index says are not yet checkpointed.

The oracle for how many pages a write dirties (each page a commit changes is logged
whole: sqlite.org/walformat.html).  A WAL file is a 32-byte header (page size at byte
8, the salts at 16) and frames of a 24-byte header (page number, and for the last
frame of a commit the database size, else 0; then the salts) plus one page.  Frames
left over from before the log last started over carry old salts and are not read.
"""

from __future__ import annotations

import sqlite3
import struct
import sys
from collections import Counter
from typing import List, Tuple


def wal_frames(db_path: str) -> List[Tuple[int, bool]]:
    """``(page number, ends a commit)`` of each frame of the current log, in order."""
    with open(db_path + "-wal", "rb") as f:
        data = f.read()
    if len(data) < 32:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    out, off = [], 32
    while off + 24 + page_size <= len(data) and data[off + 8:off + 16] == salt:
        page, db_size = struct.unpack(">II", data[off:off + 8])
        out.append((page, db_size != 0))
        off += 24 + page_size
    return out


def frames_by_table(db_path: str) -> Tuple[Counter, int]:
    """``(frames per table or index name, commits)`` of the current log (``dbstat``
    names each page's table; a page freed since is counted as ``?``)."""
    frames = wal_frames(db_path)
    with sqlite3.connect(db_path) as c:
        owner = dict(c.execute("SELECT pageno, name FROM dbstat"))
    return Counter(owner.get(p, "?") for p, _ in frames), sum(1 for _, commit in frames if commit)


def frames_left(db_path: str) -> int:
    """WAL frames not yet copied into the database, read from SQLite's own wal-index
    (the -shm file; sqlite.org/walformat.html: the header's mxFrame at byte 16, the
    checkpoint's nBackfill at byte 96, native byte order)."""
    with open(db_path + "-shm", "rb") as f:
        head = f.read(100)
    return int.from_bytes(head[16:20], sys.byteorder) - int.from_bytes(head[96:100], sys.byteorder)
