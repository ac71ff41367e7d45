"""``primus-lens serve``: run the Lens telemetry server.

:func:`register` adds the subcommand to the ``primus-lens`` parser;
``python -m primus_lens_wandb_exporter.server`` runs the same command standalone.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import math
import os
import shutil
import socket
import sys
from typing import Optional, Sequence

from .gc_tuning import tune_gc

log = logging.getLogger("primus_lens.server")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``serve``."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--db", default=os.environ.get("PRIMUS_LENS_DB") or None,
                   help="database: a path or sqlite:///PATH (default: lens.db under the user data "
                        "directory), or postgresql://user@host:port/db")
    p.add_argument("--token", default=None,
                   help="admin bearer token(s), comma-separated: everything on /api/v1 (default: "
                        "$PRIMUS_LENS_API_TOKEN; with no token of any role the API is open)")
    p.add_argument("--ingest-token", default=None,
                   help="ingest token(s) for training pods, comma-separated: only POST /api/v1/wandb/*, "
                        "cannot list or read (default: $PRIMUS_LENS_INGEST_TOKEN)")
    p.add_argument("--read-token", default=None,
                   help="read-only token(s) for the UI and Grafana, comma-separated: only GET/HEAD "
                        "(default: $PRIMUS_LENS_READ_TOKEN)")
    p.add_argument("--allow-insecure-bind", action="store_true",
                   help="allow binding a non-loopback address without any token")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name the server answers to (repeatable; also $PRIMUS_LENS_ALLOWED_HOSTS, "
                        "comma-separated); loopback names, IP addresses and the --host address always; "
                        "list the names clients use, e.g. the Kubernetes Service name; '*' = any")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (default 1); more parse and validate in parallel, SQLite "
                        "still commits one batch at a time")
    p.add_argument("--db-wait", type=float, default=30.0, metavar="SECONDS",
                   help="at start, keep retrying an unreachable database (PostgreSQL) for this long, "
                        "then exit 1 with one line (default 30; 0 = try once)")
    p.add_argument("--retention-days", type=float, default=None, metavar="DAYS",
                   help="delete workloads with no report for this many days (checked at start and "
                        "hourly; default: keep everything)")
    p.add_argument("--rollup-tails", type=int, default=None, metavar="N",
                   help="series whose rollup tail each server process keeps in memory (default 16384, "
                        "~2-6 KiB each); set it above the series a fleet writes every second, or each "
                        "append reads its tail back from the database")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default info); logs are JSON lines on stderr")


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to an argparse subparsers object; the command runs :func:`serve`."""
    # Plain text: argparse prints the description as it is (the module docstring is reST).
    p = subparsers.add_parser("serve", help="run the Lens telemetry server (ingest, query API, UI)",
                              description="Run the Lens telemetry server: ingest from the exporter, the "
                                          "query API and the UI, until SIGTERM or Ctrl-C.")
    add_arguments(p)
    p.set_defaults(func=serve)
    return p


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(ai[4][0]).is_loopback for ai in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT; in-flight requests finish first."""
    import uvicorn

    from . import logs, shared_stats, workers
    from .app import create_app
    from .settings import Settings
    from .storage import normalize_db_url

    logs.configure(args.log_level)
    if args.workers < 1:
        print("primus-lens serve: --workers must be at least 1", file=sys.stderr)
        return 2
    from .auth import ADMIN_TOKEN_ENV, INGEST_TOKEN_ENV, READ_TOKEN_ENV, parse_tokens

    # Each option, else its environment variable (an empty option turns the variable off).
    token, ingest_token, read_token = (
        arg if arg is not None else (os.environ.get(env) or None)
        for arg, env in ((args.token, ADMIN_TOKEN_ENV), (args.ingest_token, INGEST_TOKEN_ENV),
                         (args.read_token, READ_TOKEN_ENV)))
    import re

    for option, value in (("--token", token), ("--ingest-token", ingest_token), ("--read-token", read_token)):
        # Kubernetes leaves $(VAR) as it is when VAR is not defined: that text would be a valid token.
        if any(re.fullmatch(r"\$\([A-Za-z_][A-Za-z0-9_]*\)", t) for t in parse_tokens(value)):
            print(f"primus-lens serve: {option}: holds an unexpanded $(VAR) reference, not a token: define "
                  "the variable before this one in the pod's env (see deploy/k8s/deployment.yaml)", file=sys.stderr)
            return 2
    if not any(parse_tokens(t) for t in (token, ingest_token, read_token)) and not is_loopback(args.host) \
            and not args.allow_insecure_bind:
        print(f"primus-lens serve: refusing to bind {args.host} without a token: anyone who can reach it "
              "could write, read and delete metrics. Set --token / PRIMUS_LENS_API_TOKEN (admin), and "
              "--ingest-token / --read-token for training pods and the UI, or pass "
              "--allow-insecure-bind if the network is trusted.", file=sys.stderr)
        return 2
    from .auth import Tokens

    log.info("auth tokens per role: %s", Tokens(*(parse_tokens(t) for t in (token, ingest_token, read_token)))
             .describe())
    try:
        db_url = normalize_db_url(args.db)
    except ValueError as e:
        print(f"primus-lens serve: --db: {e}", file=sys.stderr)
        return 2
    from .security import ALLOWED_HOSTS_ENV, parse_host_list

    hosts = tuple(args.allowed_host) + tuple(parse_host_list(os.environ.get(ALLOWED_HOSTS_ENV)))
    if args.retention_days is not None and not (math.isfinite(args.retention_days) and args.retention_days > 0):
        # nan passed "<= 0" and then deleted nothing, silently
        print("primus-lens serve: --retention-days must be a positive number of days", file=sys.stderr)
        return 2
    if not math.isfinite(args.db_wait):
        print("primus-lens serve: --db-wait must be a number of seconds", file=sys.stderr)
        return 2
    if args.rollup_tails is not None and args.rollup_tails < 0:
        print("primus-lens serve: --rollup-tails must be 0 or more", file=sys.stderr)
        return 2
    from .ops import DatabaseUnavailable, open_store_waiting

    try:
        # Opened (and migrated) here, before any worker starts, waiting for a database still starting.
        store = open_store_waiting(db_url, max(args.db_wait, 0.0), _redact(db_url))
    except DatabaseUnavailable as e:
        print(f"primus-lens serve: {e}", file=sys.stderr)
        return 1
    settings = Settings(db_url=db_url, token=token, host=args.host, port=args.port, allowed_hosts=hosts,
                        retention_days=args.retention_days, ingest_token=ingest_token, read_token=read_token,
                        rollup_tails=args.rollup_tails)
    common = dict(host=args.host, port=args.port, log_config=None, access_log=False, backlog=4096,
                  timeout_graceful_shutdown=30, timeout_keep_alive=30,
                  http="httptools" if _has("httptools") else "h11",
                  loop="uvloop" if _has("uvloop") else "asyncio")
    if args.workers > 1:
        # Migrated once above, before the workers start and open the database.
        store.close()
        # The workers add up their counters for /health through files here.
        stats_dir = shared_stats.new_dir()
        # prometheus_client's multiprocess mode: each worker's request counters go to
        # files here, and /metrics on any worker adds up all of them.  Set before the
        # workers start (they read it when they import prometheus_client).
        prom_dir = os.path.join(stats_dir, "prometheus")
        os.makedirs(prom_dir, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
        conf = {"db_url": db_url, "token": token, "host": args.host, "port": args.port,
                "log_level": args.log_level, "stats_dir": stats_dir, "allowed_hosts": hosts,
                "retention_days": args.retention_days, "ingest_token": ingest_token, "read_token": read_token,
                "rollup_tails": args.rollup_tails}
        log.info("starting %d workers on http://%s:%d database=%s", args.workers, args.host, args.port,
                 _redact(db_url))
        try:
            if workers.supported():
                return workers.run(args.workers, conf, common, _redact(db_url))
            # Elsewhere uvicorn's supervisor: one shared socket (connections less evenly spread).
            os.environ[_WORKER_ENV] = json.dumps(conf)
            uvicorn.run(f"{__name__}:worker_app", factory=True, workers=args.workers, **common)
            return 0
        finally:
            shutil.rmtree(stats_dir, ignore_errors=True)
    app = create_app(settings, store)
    config = uvicorn.Config(app, **common)
    tune_gc()
    server = _server_class()(config)
    server.db_where = _redact(db_url)
    try:
        server.run()
    except KeyboardInterrupt:
        # Ctrl-C: uvicorn shut down gracefully, then re-raised the signal; that is the normal
        # way to stop a server in a terminal, not an error worth a traceback.
        pass
    return 0


_WORKER_ENV = "PRIMUS_LENS_SERVE_WORKER_SETTINGS"


def worker_app():
    """The app of one ``--workers`` process (uvicorn imports this by name)."""
    from . import logs
    from .app import create_app
    from .settings import Settings

    conf = json.loads(os.environ[_WORKER_ENV])
    logs.configure(conf.pop("log_level"))
    app = create_app(Settings(**conf))
    tune_gc()
    return app


def _redact(url: str) -> str:
    """The database URL without its password, for logs: the user-info's (an empty user name too)
    and a ``password=`` or ``sslpassword=`` query parameter's, however percent-encoded (libpq
    decodes the names)."""
    import re
    from urllib.parse import unquote

    url = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)

    def value(m):
        secret = unquote(m.group(2)).lower() in ("password", "sslpassword")
        return m.group(1) + m.group(2) + "=" + ("***" if secret else m.group(3))

    return re.sub(r"([?&])([^=&#]*)=([^&#]*)", value, url)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        db_where = "?"

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and self.servers:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                # One line tools (and the test fixtures) can wait for and parse.
                log.info("listening on http://%s:%d database=%s", host, port, self.db_where)

    return Server


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m primus_lens_wandb_exporter.server [serve] [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="python -m primus_lens_wandb_exporter.server",
                                description="Run the Lens telemetry server.")
    add_arguments(p)
    return serve(p.parse_args(argv))
