"""pytest fixtures that run the REAL Lens server as a subprocess.

Use ``lens_server`` (a started server on SQLite, or on PostgreSQL when the test is
parametrised that way) or ``lens_server_factory`` (start several, with a token or
extra options).  The server object has ``.url``, ``.api`` (``url + "/api/v1"``),
``.db_url``, ``.token``, ``.stop()`` (SIGTERM, graceful), ``.kill()`` (SIGKILL),
``.restart()`` (same port and database), ``.get/.post`` helpers and ``.log_text()``.

Databases: ``lens_db_kind`` is ``"sqlite"`` unless a test parametrises it::

    @pytest.mark.parametrize("lens_db_kind", LENS_DB_KINDS, indirect=True)

``LENS_DB_KINDS`` holds ``"sqlite"`` and ``"postgres"``; the latter is skipped
unless ``PRIMUS_LENS_TEST_POSTGRES_DSN`` names a server where we may create
databases (each server gets a fresh ``lens_test_<random>`` database, dropped after).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import quote

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC = REPO_ROOT / "src"
PG_DSN_ENV = "PRIMUS_LENS_TEST_POSTGRES_DSN"

LENS_DB_KINDS = [
    "sqlite",
    pytest.param("postgres", marks=[pytest.mark.postgres,
                                    pytest.mark.skipif(not os.environ.get(PG_DSN_ENV),
                                                       reason=f"{PG_DSN_ENV} is not set")]),
]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_url(dsn: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(dsn)
    user = quote(d.get("user") or "postgres", safe="")
    pw = d.get("password")
    auth = user + (":" + quote(pw, safe="") if pw else "")
    host = d.get("host") or "127.0.0.1"
    if host.startswith("/"):
        return f"postgresql://{auth}@/{dbname}?host={quote(host, safe='')}&port={d.get('port') or 5432}"
    return f"postgresql://{auth}@{host}:{d.get('port') or 5432}/{dbname}"


def create_pg_database(dsn: Optional[str] = None, prefix: str = "lens_test_") -> str:
    """Create ``<prefix><random>`` on the test PostgreSQL (``dsn``, default
    ``PRIMUS_LENS_TEST_POSTGRES_DSN``); return its URL. The benchmarks use it too."""
    import psycopg

    dsn = dsn or os.environ[PG_DSN_ENV]
    name = prefix + uuid.uuid4().hex[:12]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _pg_url(dsn, name)


def drop_pg_database(url: str, dsn: Optional[str] = None) -> None:
    """Drop a database made by :func:`create_pg_database` (best effort: a failure
    is a warning, so clean-up never fails a test, and a left database is seen)."""
    import warnings

    import psycopg

    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    try:
        with psycopg.connect(dsn or os.environ[PG_DSN_ENV], autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error as e:
        warnings.warn(f"could not drop test database {name}: {e}", stacklevel=2)


class LensServer:
    """A ``python -m primus_lens_wandb_exporter.server`` process and its database."""

    def __init__(self, db_url: str, log_path: Path, token: Optional[str] = None,
                 extra_args: Sequence[str] = (), port: Optional[int] = None, env: Optional[dict] = None):
        self.db_url = db_url
        self.env = dict(env or {})  # extra environment of the process (e.g. PRIMUS_LENS_READ_TOKEN)
        self.token = token
        self._port_given = bool(port)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = self.url + "/api/v1"
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def db_kind(self) -> str:
        """``"sqlite"`` or ``"postgres"``."""
        return "sqlite" if self.db_url.startswith("sqlite") else "postgres"

    @property
    def sqlite_path(self) -> str:
        """The database file of a SQLite server."""
        return self.db_url[len("sqlite://"):]

    def start(self, timeout: float = 60.0) -> "LensServer":
        """Start the process and wait until /health answers 200.

        A port chosen free can be taken by another process before the server binds it (the
        suite runs on two workers beside other jobs): then the server exits with "cannot
        bind"; it is started again on a new free port (twice at most)."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except RuntimeError as exc:
                if attempt == 2 or "Address already in use" not in str(exc) or self._port_given:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.api = self.url + "/api/v1"
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> "LensServer":
        import requests

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        for name in ("PRIMUS_LENS_API_TOKEN", "PRIMUS_LENS_INGEST_TOKEN", "PRIMUS_LENS_READ_TOKEN"):
            env.pop(name, None)  # only the tokens a test passes
        env.update(self.env)
        cmd = [sys.executable, "-m", "primus_lens_wandb_exporter.server", "--port", str(self.port),
               "--db", self.db_url, *self.extra_args]
        if self.token:
            cmd += ["--token", self.token]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT))
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lens server exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"lens server did not become healthy in {timeout}s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGTERM (graceful: in-flight requests finish) and wait; SIGKILL if stuck."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: the crash the durability tests simulate."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> "LensServer":
        """Stop (gracefully if still running) and start again on the same port and database."""
        self.stop()
        return self.start()

    def headers(self) -> dict:
        """Authorization header when the server has a token."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **params):
        """GET ``path``: ``/health`` and ``/api/...`` from the root, anything else under ``/api/v1``."""
        import requests

        base = self.url if path.startswith(("/health", "/api/")) else self.api
        return requests.get(base + path, params=params, headers=self.headers(), timeout=60)

    def post(self, path: str, body) -> "object":
        """POST JSON to ``api + path``, e.g. ``post("/wandb/metrics", {...})``."""
        import requests

        return requests.post(self.api + path, json=body, headers=self.headers(), timeout=60)

    def post_raw(self, path: str, raw: bytes) -> "object":
        """POST ``raw`` bytes as JSON to ``api + path`` (a body the test built byte by byte)."""
        import requests

        headers = dict(self.headers(), **{"Content-Type": "application/json"})
        return requests.post(self.api + path, data=raw, headers=headers, timeout=120)

    def log_text(self) -> str:
        """Everything the server wrote (JSON lines)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def lens_db_kind(request) -> str:
    """``"sqlite"`` or ``"postgres"``; parametrise indirectly with :data:`LENS_DB_KINDS`."""
    kind = getattr(request, "param", "sqlite")
    if kind == "postgres" and not os.environ.get(PG_DSN_ENV):
        pytest.skip(f"{PG_DSN_ENV} is not set")
    return kind


@pytest.fixture
def lens_db_url_factory(tmp_path, lens_db_kind):
    """Make fresh database URLs of the test's kind; PostgreSQL ones are dropped at teardown."""
    made = []

    def make() -> str:
        if lens_db_kind == "postgres":
            url = create_pg_database()
        else:
            url = f"sqlite:///{tmp_path}/lens-{uuid.uuid4().hex[:8]}.db"
        made.append(url)
        return url

    yield make
    for url in made:
        if url.startswith("postgres"):
            drop_pg_database(url)


@pytest.fixture
def lens_server_factory(tmp_path, lens_db_url_factory):
    """``factory(token=None, extra_args=(), db_url=None) -> LensServer`` (started; stopped at teardown)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    servers = []

    def factory(token: Optional[str] = None, extra_args: Sequence[str] = (),
                db_url: Optional[str] = None) -> LensServer:
        srv = LensServer(db_url or lens_db_url_factory(), tmp_path / f"server-{len(servers)}.log", token, extra_args)
        servers.append(srv)
        return srv.start()

    yield factory
    for srv in servers:
        srv.stop()


@pytest.fixture
def lens_server(lens_server_factory) -> LensServer:
    """A started Lens server on a fresh database (SQLite unless ``lens_db_kind`` says otherwise)."""
    return lens_server_factory()
