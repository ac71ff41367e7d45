"""On-disk queue of undelivered request bodies (the HTTP sink's spool).

One file per undelivered request, written atomically, replayed oldest first when
Lens is reachable again, by this process or the next one.  Its size is bounded; when
it must drop, it drops the oldest files and counts the points lost.
"""

import json
import logging
import os
import threading
import time
from typing import Iterator, Optional, Tuple

import orjson

from .._procs import owner_tag, process_alive, process_start
from ..core.log import get_logger, log_once

SUFFIX = ".json"


def _loads(data: bytes):
    """A spool record: orjson (C, ~4x faster on a 5,000-point body); the stdlib for what orjson
    refuses but Python's JSON accepts (``NaN`` tokens of a hand-made file)."""
    try:
        return orjson.loads(data)
    except ValueError:
        return json.loads(data)


def default_spool_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "primus-lens", "spool")


def stats_fallback_dir(spool_dir: str) -> Optional[str]:
    """Where the counters of a process using ``spool_dir`` are kept outside it (doctor reads both).

    /dev/shm (memory, so a full or read-only spool disk does not matter), else the temp dir;
    one sub-directory per spool directory so two jobs on a node do not mix.
    """
    import hashlib
    import tempfile

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    key = hashlib.sha1(os.path.abspath(spool_dir).encode()).hexdigest()[:16]
    return os.path.join(base, "primus-lens-stats", key)


def write_file_atomic(path: str, data: bytes, fsync: bool = False):
    """Write ``path`` via a temp file + rename; the temp file is removed if anything fails."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


class Spool:
    """A bounded directory of request bodies: ``{"endpoint": ..., "payload": ..., "points": N}``.

    Claims: a file being sent is renamed ``<name>.claimed-<pid>-<start>``, where ``start`` is
    the owner's process start time (``owner_tag``).  A pid alone is not an owner: in a
    restarted container the trainer is pid 1 again, and its predecessor's claims would look
    alive forever.  A claim whose (pid, start) no longer runs is returned to the queue.
    """

    def __init__(self, directory: Optional[str] = None, max_bytes: int = 512 * 1024 * 1024, on_error=None):
        self.directory = directory or default_spool_dir()
        self.max_bytes = max_bytes
        self.written = 0
        self.dropped_files = 0
        self.dropped_points = 0
        self.write_errors = 0
        self.last_write_error = None
        # Called (no arguments) after a failed write: the recorder writes its stats file at once.
        self.on_error = on_error
        self._lock = threading.Lock()
        self._seq = 0

    def write(self, endpoint: str, payload: dict, points: int = 0, body: Optional[bytes] = None,
              count_loss: bool = True) -> bool:
        """Persist one request; False (counted) if the disk refused it."""
        return self._write(endpoint, payload, points, body, claimed=False, count_loss=count_loss) is not None

    def write_claimed(self, endpoint: str, payload: dict, points: int = 0,
                      body: Optional[bytes] = None) -> Optional[str]:
        """Persist one request that this process is still sending (write-ahead).

        The file is born claimed by this process, so no replay here or elsewhere sends it
        while it is on the wire; ``done()`` removes it once Lens has it, ``release()`` hands
        it to the spool queue when sending gives up, and a SIGKILL leaves a claim whose owner
        is gone, which the next process reclaims.  Returns the path, None when the disk
        refused it (counted as a write error, not as a loss: the batch is still in memory).
        """
        return self._write(endpoint, payload, points, body, claimed=True, count_loss=False)

    def _write(self, endpoint, payload, points, body, claimed, count_loss) -> Optional[str]:
        data = body if body is not None else json.dumps(payload, separators=(",", ":"), default=str).encode()
        record = b'{"endpoint":%s,"points":%d,"payload":%s}' % (json.dumps(endpoint).encode(), points, data)
        with self._lock:
            self._seq += 1
            name = "%020d-%d-%06d-p%d%s" % (time.time_ns(), os.getpid(), self._seq, points, SUFFIX)
            final = os.path.join(self.directory, name)
            if claimed:
                final = "%s.claimed-%s" % (final, owner_tag())
            try:
                # A full disk fails mid-write: the temp file is removed, never left partial or empty.
                write_file_atomic(final, record, fsync=True)
                self.written += 1
            except OSError as exc:
                self.write_errors += 1
                self.last_write_error = repr(exc)
                if count_loss:
                    self.dropped_points += points
                # One line per cause (a full disk fails every batch): the counts are in
                # spool_write_errors / spool_dropped_points, shown by doctor and sent to Lens.
                log_once(("spool-write", self.directory, getattr(exc, "errno", None)), logging.ERROR,
                         "spool write to %s failed: %r; undeliverable points are lost (counted in "
                         "spool_dropped_points, shown by `primus-lens doctor`; this line is printed once "
                         "per cause)", self.directory, exc)
                if self.on_error is not None:
                    try:
                        self.on_error()
                    except Exception:
                        pass
                return None
        if not claimed:
            self._enforce_bound()
        return final

    def files(self) -> list:
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(SUFFIX) and not n.startswith("."))
        except OSError:
            return []
        return [os.path.join(self.directory, n) for n in names]

    def backlog(self) -> Tuple[int, int, int]:
        """(files, points, bytes) waiting in the spool.

        Claims whose owner is gone (a process killed while sending, or one that exited with
        batches written ahead) wait too: the next replay reclaims them.
        """
        files = self.files() + [c["file"] for c in self.claims() if c["pid"] is not None and not c["alive"]]
        points = sum(_points_of(f) for f in files)
        size = 0
        for f in files:
            try:
                size += os.path.getsize(f)
            except OSError:
                pass
        return len(files), points, size

    def claim(self) -> Iterator[Tuple[str, dict]]:
        """Yield (claimed path, record) oldest first; the caller calls done() or release()."""
        self._reclaim_stale()
        tag = owner_tag()
        for path in self.files():
            claimed = "%s.claimed-%s" % (path, tag)
            try:
                os.replace(path, claimed)
            except OSError:
                continue  # another process took it
            try:
                with open(claimed, "rb") as fh:
                    record = _loads(fh.read())
            except (OSError, ValueError) as exc:
                get_logger().error("unreadable spool file %s set aside: %r", path, exc)
                try:
                    os.replace(claimed, path + ".bad")
                except OSError:
                    pass
                continue
            yield claimed, record

    @staticmethod
    def done(claimed: str):
        try:
            os.remove(claimed)
        except OSError:
            pass

    @staticmethod
    def release(claimed: str):
        try:
            os.replace(claimed, claimed.rsplit(".claimed-", 1)[0])
        except OSError:
            pass

    def claims(self) -> list:
        """Claimed files: ``[{"file", "points", "pid", "start", "alive"}]`` (``primus-lens doctor``)."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return []
        out = []
        mine = owner_tag()
        for name in names:
            if ".claimed-" not in name:
                continue
            path = os.path.join(self.directory, name)
            tag = name.rsplit(".claimed-", 1)[1]
            pid, start = _parse_owner(tag)
            # Our own claims (every batch written ahead during an outage) need no process lookup.
            alive = tag == mine or (pid is not None and not _owner_gone(path, pid, start))
            out.append({"file": path, "points": _points_of(path), "pid": pid, "start": start, "alive": alive})
        return out

    def _reclaim_stale(self):
        # A claim whose owner (pid + start time) no longer runs is returned to the queue.
        for claim in self.claims():
            if claim["pid"] is not None and not claim["alive"]:
                self.release(claim["file"])

    def _enforce_bound(self):
        if self.max_bytes <= 0:
            return
        files = self.files()
        sizes = []
        total = 0
        for f in files:
            try:
                size = os.path.getsize(f)
            except OSError:
                size = 0
            sizes.append(size)
            total += size
        index = 0
        while total > self.max_bytes and index < len(files) - 1:
            try:
                os.remove(files[index])
                total -= sizes[index]
                self.dropped_files += 1
                lost = _points_of(files[index])
                self.dropped_points += lost
                get_logger().warning("spool over %d bytes: dropped oldest batch (%d points, counted)",
                                     self.max_bytes, lost)
            except OSError:
                pass
            index += 1

    def stats(self):
        files, points, size = self.backlog()
        return {"spool_dir": self.directory, "spool_files": files, "spool_points": points, "spool_bytes": size,
                "spool_written": self.written, "spool_dropped_files": self.dropped_files,
                "spool_dropped_points": self.dropped_points, "spool_write_errors": self.write_errors,
                "spool_last_write_error": self.last_write_error}


def _parse_owner(tag: str):
    pid, _, start = tag.partition("-")
    if not pid.isdigit():
        return None, None
    return int(pid), (int(start) if start.isdigit() else None)


def _owner_gone(path: str, pid: int, start: Optional[int]) -> bool:
    if not process_alive(pid):
        return True
    now = process_start(pid)
    if now is None:
        return False  # alive but unreadable: assume it is the owner
    if start:
        # Another process with the same pid (a restarted container's pid 1): not the owner.
        return abs(now - start) > 1
    # A claim of an older version names only the pid: the file was renamed (its ctime) before
    # the process now holding that pid started, so that process cannot be its owner.
    try:
        return os.stat(path).st_ctime * 100 < now - 100
    except OSError:
        return False


def _points_of(path: str) -> int:
    base = os.path.basename(path)
    try:
        return int(base.rsplit("-p", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return 0
