"""``serve --workers N``: N server processes, each with its own listening socket.

uvicorn's own ``--workers`` shares one listening socket between its processes,
and every process's event loop races to accept each connection.  Exporters keep
their connection open, so whichever process won the race at start-up serves
that rank for good: in a burst (a job's ranks all start at once) one process
took 14 of 16 connections and the other sat idle.  Here every process binds the
port itself with ``SO_REUSEPORT``, so the kernel spreads connections over the
processes' sockets, and a process busy with a batch never loses or wins
connections by it.  The kernel spreads by a hash of each connection's
addresses, evenly only on average: 16 connections split 11/5 or worse about
one time in five, and once the lighter process has sent its last answer the
other works alone (a 16-sender benchmark ran at ~240k instead of ~420k
points/s in such runs).  So every worker closes a kept-alive connection after
``REBALANCE_EVERY`` requests (``Connection: close`` on the answer); the
client's next request opens a new connection, which the kernel spreads anew.

The supervisor (this process) keeps the port reserved, starts the workers,
logs one ``listening on`` line when all of them serve, restarts a worker that
dies, and on SIGTERM/SIGINT stops them gracefully (each finishes its in-flight
requests).  Workers stop too if the supervisor is killed (Linux parent-death
signal), so a crashed server never leaves processes holding the port.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
import time

log = logging.getLogger("primus_lens.server")

#: seconds the supervisor waits for all workers to serve before giving up
STARTUP_TIMEOUT = 120.0
#: a worker answers every this many requests of a connection with ``Connection: close``
REBALANCE_EVERY = 8


class Rebalance:
    """ASGI middleware: close each client connection after ``every`` requests.

    Requests are counted per client address (one per connection).  Counts of
    connections that ended on their own are forgotten in bulk once there are
    many, which at worst lets such a connection live a few requests longer.
    """

    MAX_TRACKED = 4096

    def __init__(self, app, every: int = REBALANCE_EVERY):
        self.app = app
        self.every = every
        self.counts: dict = {}

    async def __call__(self, scope, receive, send):
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            return await self.app(scope, receive, send)
        counts = self.counts
        n = counts.pop(client, 0) + 1
        if n < self.every:
            if len(counts) >= self.MAX_TRACKED:
                counts.clear()
            counts[client] = n
            return await self.app(scope, receive, send)

        async def send_closing(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", ()), (b"connection", b"close")])
            await send(message)

        return await self.app(scope, receive, send_closing)


def supported() -> bool:
    """True where the kernel balances connections over ``SO_REUSEPORT`` sockets (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _bind(host: str, port: int, exclusive: bool = False) -> socket.socket:
    """A socket bound to ``host:port`` that workers' sockets may join (``SO_REUSEPORT``).

    ``exclusive``: bind before allowing that, so the bind fails if anything holds
    the port -- another Lens server's workers included, which would otherwise
    silently share it (and their database) with ours.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if not exclusive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    if exclusive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent exits."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not glibc/Linux: the supervisor still stops workers itself
        pass


def _worker(index: int, conf: dict, common: dict, ready) -> None:
    """Body of one worker process (started with the ``spawn`` method)."""
    _die_with_parent()
    import uvicorn

    from . import logs
    from .app import create_app
    from .gc_tuning import tune_gc
    from .settings import Settings

    logs.configure(conf.pop("log_level"))
    app = Rebalance(create_app(Settings(**conf)))
    sock = _bind(conf["host"], conf["port"])
    config = uvicorn.Config(app, **common)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                ready.send(index)
                ready.close()

    tune_gc()
    Server(config).run(sockets=[sock])


def run(n: int, conf: dict, common: dict, db_where: str) -> int:
    """Run ``n`` workers until SIGTERM/SIGINT; return the exit status."""
    try:
        holder = _bind(conf["host"], conf["port"], exclusive=True)  # reserves the port (never listens)
    except OSError as e:
        log.error("cannot bind %s:%d: %s", conf["host"], conf["port"], e)
        return 1
    conf = dict(conf, port=holder.getsockname()[1])
    ctx = multiprocessing.get_context("spawn")
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    waiting = {}  # read end of a starting worker's pipe -> its index

    def start(i: int):
        # A pipe, not a multiprocessing.Queue: a queue's lock would start a
        # resource-tracker process beside the workers.
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(i, dict(conf), common, w), name=f"primus-lens-worker-{i}")
        p.start()
        w.close()
        waiting[r] = i
        started[i] = time.monotonic()
        return p

    started = [0.0] * n
    procs = [start(i) for i in range(n)]
    restarts = 0
    status = 0
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while waiting and not stopping:
            dead = [i for i, p in enumerate(procs) if not p.is_alive()]
            if dead:
                log.error("worker %d exited with %s during start-up", dead[0], procs[dead[0]].exitcode)
                return 1
            if time.monotonic() > deadline:
                log.error("workers did not start within %.0f s", STARTUP_TIMEOUT)
                return 1
            for r in multiprocessing.connection.wait(list(waiting), timeout=0.2):
                _ready(r, waiting)
        if not stopping:
            log.info("listening on http://%s:%d database=%s workers=%d", conf["host"], conf["port"], db_where, n)
        while not stopping:
            for r in multiprocessing.connection.wait(list(waiting), timeout=0):
                _ready(r, waiting)
            for i, p in enumerate(procs):
                # At most one restart a second per worker: one that cannot start
                # (say, the database is gone) must not spin.
                if not p.is_alive() and not stopping and time.monotonic() - started[i] >= 1.0:
                    restarts += 1
                    log.warning("worker %d exited with %s; restarting it (%d restarts so far)", i, p.exitcode,
                                restarts)
                    procs[i] = start(i)
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: uvicorn finishes in-flight requests, then exits
        grace = common.get("timeout_graceful_shutdown") or 30
        end = time.monotonic() + grace + 5
        for p in procs:
            p.join(max(0.0, end - time.monotonic()))
            if p.is_alive():
                log.error("worker %s did not stop in time; killing it", p.name)
                p.kill()
                p.join()
                status = 1
        holder.close()
        for r in waiting:
            r.close()
        for s, h in old.items():
            signal.signal(s, h)
    return status


def _ready(r, waiting: dict) -> None:
    """A starting worker's pipe became readable: it serves now (or died first)."""
    try:
        r.recv()
    except EOFError:
        pass  # died before serving: the liveness check reports or restarts it
    r.close()
    del waiting[r]

