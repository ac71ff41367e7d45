"""The counters of ``serve --workers N`` processes, added up for ``/health``.

Each process has its own store and so its own counters (ingest transactions,
retries, checkpoints ...).  A ``/health`` request reaches one process, which
would report only its share.  So every process writes its counters to a
file in a directory ``serve`` creates for the run (``PID-STARTNS.json``, so a
reused process id never overwrites a dead worker's file), replaced atomically
after every ingest request (before its answer is sent), once a second for the
background counters, and at shutdown; ``/health`` adds up all of them, its own
taken live.  The files of workers that died stay: what they
counted happened.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from .._procs import process_alive

log = logging.getLogger("primus_lens.server")

_PREFIX = "primus-lens-workers-"


def new_dir(parent: Optional[str] = None) -> str:
    """A new directory for one ``serve --workers``'s counters, named after this process.

    By default in ``/dev/shm`` where it is writable: one write per ingest request
    costs ~50 us on tmpfs against ~370 us on the VM's disk-backed /tmp.  ``serve``
    removes it at shutdown; a supervisor that was killed cannot, so the
    directories of supervisors no longer running are removed here first.
    """
    if parent is None:
        shm = "/dev/shm"
        parent = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    try:
        names = os.listdir(parent)
    except OSError:
        names = []
    for name in names:
        pid = name[len(_PREFIX):].split("-", 1)[0]
        if name.startswith(_PREFIX) and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent)


class SharedStats:
    """One process's view of the counters of all the processes of one ``serve``."""

    #: seconds between two writes of this process's counters
    INTERVAL = 1.0

    def __init__(self, directory: str, own: Callable[[], Dict[str, int]]):
        self.dir = directory
        self.own = own
        self.pid = os.getpid()
        self.name = f"{self.pid}-{time.time_ns()}.json"
        self.path = os.path.join(directory, self.name)
        self.write_errors = 0
        self._lock = threading.Lock()  # request threads and the timer write the same file
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lens-shared-stats", daemon=True)

    def start(self) -> None:
        self.write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.write()

    def write(self) -> None:
        tmp = self.path + ".tmp"
        try:
            with self._lock:
                with open(tmp, "w") as f:
                    json.dump({"pid": self.pid, "storage": self.own()}, f)
                os.replace(tmp, self.path)
        except OSError as e:
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 100 == 0:
                log.warning("cannot share this worker's counters in %s (%d failures): %s",
                            self.dir, self.write_errors, e)

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self.write()

    def snapshot(self) -> Tuple[Dict[str, int], List[dict]]:
        """(counters added up over every process, ``[{"pid", "alive", "storage"}]`` per process)."""
        processes: Dict[str, Tuple[int, dict]] = {}
        try:
            names = os.listdir(self.dir)
        except OSError:
            names = []
        for name in names:
            if not name.endswith(".json") or name == self.name:
                continue
            try:
                with open(os.path.join(self.dir, name)) as f:
                    p = json.load(f)
                processes[name] = (int(p["pid"]), dict(p["storage"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours: the next request sees it
        processes[self.name] = (self.pid, self.own())
        totals: Dict[str, int] = {}
        for _, storage in processes.values():
            for k, v in storage.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    totals[k] = totals.get(k, 0) + v
        if self.write_errors:
            totals["shared_stats_write_errors"] = self.write_errors
        workers = [{"pid": pid, "alive": name == self.name or process_alive(pid), "storage": storage}
                   for name, (pid, storage) in sorted(processes.items())]
        return totals, workers

