"""Who may do what on ``/api/v1``: bearer tokens with roles (checked by :mod:`.middleware`).

Three roles, each given by a list of tokens (comma-separated, so a token can be
rotated: add the new one, roll the clients, remove the old one):

- admin: ``--token`` / ``PRIMUS_LENS_API_TOKEN``: everything (the one token of old);
- ingest: ``--ingest-token`` / ``PRIMUS_LENS_INGEST_TOKEN``: ``POST /api/v1/wandb/*`` only;
- read: ``--read-token`` / ``PRIMUS_LENS_READ_TOKEN``: ``GET`` / ``HEAD`` only.

Anything else (``DELETE /api/v1/workloads/{uid}``, any future write) needs the
admin token.  Auth is on as soon as any list holds a token.  No token or an
unknown one is 401; a known token whose role does not cover the request is 403
``forbidden``, naming the role that would.  Both answers use the documented JSON
error shape.  Outside ``/api/v1`` nothing is checked: the probes (``/health``,
``/livez``, ``/readyz``), Prometheus ``/metrics`` (aggregate counters only: no
workload ids, names or values), ``/api/docs`` and the UI's static files.

A training pod holds the ingest token: it can add points but can neither list
the cluster's workloads nor read or delete anyone's; the UI and Grafana hold the
read token, which can change nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import FrozenSet, Iterable, Optional

import orjson

from .errors import ApiError

ADMIN, INGEST, READ = "admin", "ingest", "read"
#: The environment variables of the ingest and read tokens (the admin token's is the
#: exporter's own PRIMUS_LENS_API_TOKEN, so one token still does everything).
ADMIN_TOKEN_ENV = "PRIMUS_LENS_API_TOKEN"
INGEST_TOKEN_ENV = "PRIMUS_LENS_INGEST_TOKEN"
READ_TOKEN_ENV = "PRIMUS_LENS_READ_TOKEN"

API_PREFIX = "/api/v1"
INGEST_PREFIX = "/api/v1/wandb/"
_READ_METHODS = frozenset(("GET", "HEAD"))


def parse_tokens(value: Optional[str]) -> tuple:
    """The tokens of a comma-separated option value (blanks around and between dropped)."""
    return tuple(t.strip() for t in value.split(",") if t.strip()) if value else ()


_MAY_INGEST = frozenset((ADMIN, INGEST))
_MAY_READ = frozenset((ADMIN, READ))
_ADMIN_ONLY = frozenset((ADMIN,))


def allowed_roles(method: str, path: str) -> FrozenSet[str]:
    """The roles whose token may make this request under /api/v1 (anything not
    named here, DELETE first of all, is the admin's)."""
    if method == "POST" and path.startswith(INGEST_PREFIX):
        return _MAY_INGEST
    if method in _READ_METHODS:
        return _MAY_READ
    return _ADMIN_ONLY


def _digest(token: bytes) -> bytes:
    # Compared as fixed-length digests: hmac.compare_digest is constant-time only
    # for equal lengths, so a token's length does not leak either.
    return hashlib.sha256(token).digest()


class Tokens:
    """The configured tokens of each role."""

    def __init__(self, admin: Iterable[str] = (), ingest: Iterable[str] = (), read: Iterable[str] = ()):
        self._entries = [(_digest(t.encode()), role)
                         for role, tokens in ((ADMIN, admin), (INGEST, ingest), (READ, read)) for t in tokens]

    @classmethod
    def from_settings(cls, settings) -> "Tokens":
        return cls(parse_tokens(settings.token), parse_tokens(settings.ingest_token),
                   parse_tokens(settings.read_token))

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def describe(self) -> str:
        """How many tokens each role has, for the start-up log (never the tokens)."""
        counts = {r: sum(1 for _, role in self._entries if role == r) for r in (ADMIN, INGEST, READ)}
        return ", ".join(f"{r}={n}" for r, n in counts.items()) if self.enabled else "off (no token: API open)"

    def roles_of(self, credential: bytes) -> FrozenSet[str]:
        """The roles of a presented token (empty: unknown).  Every configured token is
        compared, whatever matched first, so the time taken says nothing either."""
        d = _digest(credential)
        roles = set()
        for digest, role in self._entries:
            if hmac.compare_digest(d, digest):
                roles.add(role)
        return frozenset(roles)

    def check(self, authorization: Optional[bytes], method: str, path: str) -> Optional[ApiError]:
        """The 401/403 of a request under /api/v1 (``authorization``: its first
        Authorization header), or None when its token's role covers it."""
        cred = _bearer(authorization)
        roles = self.roles_of(cred) if cred is not None else frozenset()
        if not roles:
            return _UNAUTHORIZED
        allowed = allowed_roles(method, path)
        if roles & allowed:
            return None
        return _forbidden(method, path, roles, allowed)


def _bearer(value: Optional[bytes]) -> Optional[bytes]:
    """The token of an ``Authorization: Bearer <token>`` header value (the request's first)."""
    if value is None:
        return None
    scheme, _, cred = value.partition(b" ")
    return cred.strip() if scheme.lower() == b"bearer" and cred.strip() else None


_UNAUTHORIZED = ApiError(401, "unauthorized", "missing or invalid bearer token in the Authorization header",
                         "Authorization")
_MAY = {INGEST: "may only POST /api/v1/wandb/*", READ: "may only GET and HEAD"}


def _forbidden(method: str, path: str, roles: FrozenSet[str], allowed: FrozenSet[str]) -> ApiError:
    needed = " or ".join(r for r in (INGEST, READ, ADMIN) if r in allowed)
    held = " and ".join(sorted(roles))
    may = "; ".join(_MAY[r] for r in sorted(roles) if r in _MAY)
    path = path if len(path) <= 200 else path[:200] + "..."
    return ApiError(403, "forbidden", f"{method} {path} needs the {needed} token; this is the {held} token"
                    + (f", which {may}" if may else ""), "Authorization")


def refusal(err: ApiError):
    """``(status, body, headers)`` of a 401/403."""
    data = orjson.dumps(err.body())
    # RFC 6750: which scheme to use (401), or that the token lacks the scope (403).
    challenge = b'Bearer realm="primus-lens"' if err.status == 401 else \
        b'Bearer realm="primus-lens", error="insufficient_scope"'
    return err.status, data, [(b"content-type", b"application/json"),
                              (b"content-length", str(len(data)).encode()), (b"www-authenticate", challenge)]
