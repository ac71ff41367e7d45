"""On-disk queue of undelivered request bodies, and the local JSONL sink.

Spool: one file per undelivered request, written atomically, replayed oldest first
when Lens is reachable again, by this process or the next one.  Its size is
bounded; when it must drop, it drops the oldest files and counts the points lost.

JSONL sink (``PRIMUS_LENS_WANDB_SAVE_LOCAL`` + ``PRIMUS_LENS_WANDB_OUTPUT_PATH``): the
user guide's layout ``node_<NODE_RANK>/rank_<LOCAL_RANK>/wandb_metrics.jsonl``, one
point per line.
"""

import json
import os
import threading
import time
from typing import Iterator, Optional, Tuple

from .hookspecs import hookimpl
from .log import get_logger

SUFFIX = ".json"


def default_spool_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "primus-lens", "spool")


class Spool:
    """A bounded directory of request bodies: ``{"endpoint": ..., "payload": ..., "points": N}``."""

    def __init__(self, directory: Optional[str] = None, max_bytes: int = 512 * 1024 * 1024):
        self.directory = directory or default_spool_dir()
        self.max_bytes = max_bytes
        self.written = 0
        self.dropped_files = 0
        self.dropped_points = 0
        self.write_errors = 0
        self._lock = threading.Lock()
        self._seq = 0

    def write(self, endpoint: str, payload: dict, points: int = 0, body: Optional[bytes] = None) -> bool:
        """Persist one request; False (counted) if the disk refused it."""
        data = body if body is not None else json.dumps(payload, separators=(",", ":"), default=str).encode()
        record = b'{"endpoint":%s,"points":%d,"payload":%s}' % (json.dumps(endpoint).encode(), points, data)
        with self._lock:
            self._seq += 1
            name = "%020d-%d-%06d-p%d%s" % (time.time_ns(), os.getpid(), self._seq, points, SUFFIX)
            try:
                os.makedirs(self.directory, exist_ok=True)
                tmp = os.path.join(self.directory, "." + name + ".tmp")
                with open(tmp, "wb") as fh:
                    fh.write(record)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, os.path.join(self.directory, name))
                self.written += 1
            except OSError as exc:
                self.write_errors += 1
                self.dropped_points += points
                get_logger().error("spool write failed, %d points lost (counted): %r", points, exc)
                return False
        self._enforce_bound()
        return True

    def files(self) -> list:
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(SUFFIX) and not n.startswith("."))
        except OSError:
            return []
        return [os.path.join(self.directory, n) for n in names]

    def backlog(self) -> Tuple[int, int, int]:
        """(files, points, bytes) waiting in the spool."""
        files = self.files()
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
        for path in self.files():
            claimed = "%s.claimed-%d" % (path, os.getpid())
            try:
                os.replace(path, claimed)
            except OSError:
                continue  # another process took it
            try:
                with open(claimed, "rb") as fh:
                    record = json.loads(fh.read())
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

    def _reclaim_stale(self):
        # A claim whose process died is returned to the queue.
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            if ".claimed-" not in name:
                continue
            pid = name.rsplit(".claimed-", 1)[1]
            if pid.isdigit() and not process_alive(int(pid)):
                self.release(os.path.join(self.directory, name))

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
                "spool_dropped_points": self.dropped_points, "spool_write_errors": self.write_errors}


def _points_of(path: str) -> int:
    base = os.path.basename(path)
    try:
        return int(base.rsplit("-p", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return 0


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (anyone's: no permission to signal it still means alive)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except OSError:
        return True


# ---------------------------------------------------------------- JSONL sink


class JsonlSink:
    """Appends every point to the guide's per-rank ``wandb_metrics.jsonl``."""

    def __init__(self, output_path: str):
        self.output_path = output_path
        self._files = {}
        self.lines = 0
        self.errors = 0

    def path_for(self, node_rank: int, local_rank: int) -> str:
        return os.path.join(self.output_path, f"node_{node_rank}", f"rank_{local_rank}", "wandb_metrics.jsonl")

    def write(self, batch):
        path = self.path_for(batch.node_rank, batch.local_rank)
        try:
            fh = self._files.get(path)
            if fh is None:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fh = self._files[path] = open(path, "a", encoding="utf-8")
            ident = batch.identity
            head = {"workload_uid": ident.workload_uid, "pod_name": ident.pod_name, "source": batch.source,
                    "run_id": batch.run_id, "rank": batch.rank, "local_rank": batch.local_rank,
                    "node_rank": batch.node_rank, "world_size": batch.world_size}
            lines = [json.dumps({**head, **point}, separators=(",", ":")) for point in batch.points]
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            self.lines += len(lines)
        except (OSError, TypeError, ValueError) as exc:
            self.errors += 1
            get_logger().error("local JSONL write to %s failed (counted): %r", path, exc)

    def flush(self):
        for fh in self._files.values():
            try:
                fh.flush()
            except OSError:
                self.errors += 1


_sink = None
_sink_pid = None


def _get_sink():
    global _sink, _sink_pid
    if _sink_pid != os.getpid():
        from .recorder import get_recorder

        config = get_recorder().config
        _sink = JsonlSink(config.output_path) if config.local_enabled else None
        _sink_pid = os.getpid()
    return _sink


@hookimpl
def lens_report_metrics(batch):
    sink = _get_sink()
    if sink is not None:
        sink.write(batch)


@hookimpl
def lens_flush(deadline):
    sink = _get_sink()
    if sink is not None:
        sink.flush()


@hookimpl
def lens_sink_stats():
    sink = _get_sink()
    if sink is None:
        return {"jsonl": None}
    return {"jsonl": {"output_path": sink.output_path, "lines": sink.lines, "errors": sink.errors}}
