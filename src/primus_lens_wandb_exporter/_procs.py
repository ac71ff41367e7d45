"""Who owns a spool claim, and whether a process runs: process start times (psutil) and pids.

Shared by the exporter's spool (claims survive pid reuse) and the server's shared
statistics (which workers still run); stdlib + psutil only.
"""

import os
from typing import Optional


def process_start(pid: int) -> Optional[int]:
    """Start time of process ``pid`` in 1/100 s since the epoch (psutil), or None if it is gone."""
    try:
        import psutil

        return int(round(psutil.Process(pid).create_time() * 100))
    except Exception:  # NoSuchProcess, AccessDenied, ZombieProcess, psutil missing
        return None


# Process-wide cache (documented state): this process's tag, recomputed in a forked child.
_own_tag = None
_own_tag_pid = None


def owner_tag() -> str:
    """``<pid>-<start>`` of this process: who a claim belongs to (survives pid reuse)."""
    global _own_tag, _own_tag_pid
    pid = os.getpid()
    if _own_tag_pid != pid:
        _own_tag = "%d-%s" % (pid, process_start(pid) or 0)
        _own_tag_pid = pid
    return _own_tag


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (anyone's: no permission to signal it still means alive)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except OSError:
        return True
