"""The API's JSON answers: :class:`ApiError`, the error handlers, :func:`json_response`.

Every error, whoever raises it (a route, FastAPI's parameter validation, Starlette's
404/405, a bug), is answered in the protocol's shape ``{"error", "message", "field"}``.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("primus_lens.server")

#: Seconds a client is asked to wait after a 503.
RETRY_AFTER_S = 1


class ApiError(Exception):
    """An error answered to the client with ``status`` and a message naming ``field``."""

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict:
        """The JSON error body of the protocol (``field`` null when no one field is at fault)."""
        return {"error": self.code, "message": self.message, "field": self.field}


#: SQLite errors that say the database cannot be used right now (not a bad statement).
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open", "disk i/o error", "database or disk is full",
                       "readonly database")


def unavailable(exc: BaseException) -> Optional[ApiError]:
    """A 503 ``database_unavailable`` for an error that means the database cannot be reached or
    used right now (PostgreSQL down, restarting or dropping the connection; SQLite locked or its
    disk failing), so the client retries later (``Retry-After``) instead of seeing a "real server fault";
    None for anything else (a bug: 500)."""
    import sqlite3

    try:
        import psycopg
        pg = (psycopg.OperationalError, psycopg.InterfaceError)
    except ImportError:  # pragma: no cover - psycopg is a dependency of the server
        pg = ()
    down = isinstance(exc, pg) or (
        isinstance(exc, sqlite3.OperationalError) and any(m in str(exc).lower() for m in _SQLITE_UNAVAILABLE))
    if not down:
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ApiError(503, "database_unavailable", f"database unavailable, retry later: {first}")


def json_response(obj: Any, status: int = 200) -> Response:
    """An orjson-encoded response (FastAPI's default encoder is far slower)."""
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def busy_body(message: str) -> bytes:
    """The JSON error body of a 503 (admission refused, nothing was done); sent with
    ``Retry-After: RETRY_AFTER_S``."""
    return orjson.dumps({"error": "busy", "message": message, "field": None})


def busy(message: str) -> Response:
    """503 + Retry-After in the JSON error shape: admission refused, nothing was done."""
    return Response(busy_body(message), status_code=503, media_type="application/json",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


def install_error_handlers(app) -> None:
    """Answer every exception of ``app``'s routes in the JSON error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return json_response(exc.body(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
        field = ".".join(loc) or "request"
        return json_response({"error": "invalid_parameter", "message": f"{field}: {first.get('msg', 'invalid')}",
                              "field": field}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        resp = json_response({"error": code, "message": str(exc.detail), "field": None}, exc.status_code)
        resp.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # RFC 9110: Allow lists every method the path takes.  Starlette names only those of
            # the first route that matched the path (GET of /workloads/{uid}, not its DELETE).
            allowed = set()
            for route in request.app.router.routes:
                if getattr(route, "methods", None) and route.matches(request.scope)[0] == Match.PARTIAL:
                    allowed |= route.methods
            if allowed:
                resp.headers["Allow"] = ", ".join(sorted(allowed))
        return resp

    @app.exception_handler(Exception)
    async def _unexpected_error(request, exc: Exception):
        down = unavailable(exc)
        if down is not None:  # one line, not a traceback: the database, not a bug
            log.warning("%s %s: %s", request.method, request.url.path, down.message)
            return Response(orjson.dumps(down.body()), status_code=503, media_type="application/json",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
        # A bug, not a client error: logged with its traceback, answered in the
        # documented JSON error shape rather than Starlette's plain-text 500.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return json_response({"error": "internal_error", "message": "internal server error (logged on the server)",
                              "field": None}, 500)
