"""Browser safety: what stops a web page in someone's browser from using the Lens server.

Checked and added by the one ASGI layer every request passes (:mod:`.middleware`):

- :class:`BrowserGuard` refuses, before any route runs:

  * a ``Host`` that is not allowed (400): the DNS-rebinding defence.  A page at
    ``http://evil.example`` whose name is re-pointed at 127.0.0.1 reaches this server
    with ``Host: evil.example``; answering only the names the server is known by
    (loopback names, the bound address, ``--allowed-host``) makes it useless.  Hosts
    that are IP literals are always accepted: rebinding needs a *name*, and
    Kubernetes probes and Prometheus scrapes address the pod by its IP;
  * a write (any method but GET/HEAD/OPTIONS) whose ``Origin`` is present and is not
    the server's own (403): a cross-site form or ``fetch`` cannot store or delete
    anything.  Non-browser clients (the exporter, curl) send no ``Origin``;
  * a ``POST``/``PUT``/``PATCH`` under ``/api/v1`` whose body is not declared
    ``application/json`` (415): the content types a page may send cross-site without
    a CORS preflight (``text/plain``, forms) are never parsed.

- :data:`SECURITY_HEADERS` (``X-Content-Type-Options``, ``X-Frame-Options``,
  ``Referrer-Policy``) and a ``Content-Security-Policy`` (:data:`DEFAULT_CSP`) go on every
  answer (API, UI, docs, errors, 401s), keeping a ``Content-Security-Policy`` a route
  set itself (``/api/docs`` allows the hash of its one inline script).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import socket
from typing import Iterable, Optional, Sequence

import orjson

#: The environment variable with allowed Host names (comma-separated), added to --allowed-host.
ALLOWED_HOSTS_ENV = "PRIMUS_LENS_ALLOWED_HOSTS"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

#: The UI loads only its own scripts, styles and API; uPlot draws on canvas and sets
#: styles through the CSSOM (not blocked by style-src); nothing may frame it.
DEFAULT_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
               "form-action 'self'; frame-ancestors 'none'")

#: Added to every answer (with DEFAULT_CSP unless the route set its own CSP).
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"))

_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
_DEFAULT_PORT = {"http": "80", "https": "443"}


def inline_script_csp(page: bytes) -> str:
    """A CSP for an HTML ``page`` that allows exactly its inline ``<script>`` blocks (by hash).

    For ``/api/docs``: Swagger UI is started by one inline script; its styles are set
    partly inline, which is harmless enough to allow on that page only.
    """
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in re.finditer(rb"<script>(.*?)</script>", page, re.S))
    return (f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _split_host(value: str):
    """``("name", "port")`` of a Host/netloc value (``[::1]:8080`` -> ``("::1", "8080")``); lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, ""
        name, rest = value[1:end], value[end + 1:]
        return name, rest[1:] if rest.startswith(":") else ""
    name, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return value.rstrip("."), ""
    return name.rstrip("."), port


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in ("localhost", "localhost.localdomain")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def allowed_hosts(configured: Iterable[str] = (), bind_host: Optional[str] = None) -> Optional[frozenset]:
    """The Host names to accept, or ``None`` for any (``*`` among ``configured``).

    Loopback names always; the bound address when it is a specific one (not 0.0.0.0/::);
    when bound beyond loopback, this machine's host name (what a client on another machine
    naturally types; not a name an attacker controls); each ``configured`` name
    (``*.example.com`` matches its subdomains).
    """
    names = set(LOOPBACK_NAMES)
    if bind_host and bind_host not in ("0.0.0.0", "::", ""):
        names.add(_split_host(bind_host if not bind_host.count(":") > 1 else f"[{bind_host}]")[0])
    if bind_host and not _is_loopback(bind_host):
        me = socket.gethostname().lower().rstrip(".")
        names.update((me, me.split(".", 1)[0]) if me else ())
    for n in configured:
        n = n.strip().lower().rstrip(".")
        if n == "*":
            return None
        if n:
            names.add(_split_host(n)[0] if not n.startswith("*.") else n)
    return frozenset(names)


def parse_host_list(value: Optional[str]) -> list:
    """``PRIMUS_LENS_ALLOWED_HOSTS``' comma list as names."""
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def _refusal(status: int, code: str, message: str, field: str):
    """``(status, body, headers)`` of a refusal in the JSON error shape."""
    body = orjson.dumps({"error": code, "message": message, "field": field})
    return status, body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


class BrowserGuard:
    """Host allow-list (400), cross-origin writes (403), JSON-only bodies (415)."""

    def __init__(self, hosts: Optional[Sequence[str]] = None):
        self.hosts = None if hosts is None else frozenset(hosts)
        self.suffixes = tuple(h[1:] for h in (hosts or ()) if h.startswith("*."))
        self._seen: dict = {}

    def _host_ok(self, name: str) -> bool:
        if self.hosts is None or name in self.hosts or _is_ip(name):
            return True
        return bool(self.suffixes) and name.endswith(self.suffixes)

    def check(self, scope, host: Optional[bytes], origin: Optional[bytes], ctype: Optional[bytes], method: str,
              path: str):
        """The refusal ``(status, body, headers)`` of a request, or None to let it through.
        ``host``/``origin``/``ctype``: the last such header of the request (or None)."""
        if host is None:   # HTTP/1.0 without Host: the address the client connected to
            server = scope.get("server")
            host = f"{server[0]}:{server[1]}".encode() if server else b""
        # The few Host values a server sees, parsed once (bounded: a client cannot grow it).
        known = self._seen.get(host)
        if known is None:
            name, port = _split_host(host.decode("latin-1"))
            known = (self._host_ok(name), name, port)
            if len(self._seen) < 1024:
                self._seen[host] = known
        ok, name, port = known
        if not ok:
            return _refusal(400, "host_not_allowed",
                            f"Host: {name!r} is not a name this server answers to; add it with "
                            "--allowed-host / PRIMUS_LENS_ALLOWED_HOSTS", "Host")
        if method in _SAFE_METHODS:
            return None
        if origin is not None:
            origin = origin.decode("latin-1")
            if not self._same_origin(origin, name, port):
                return _refusal(403, "cross_origin_refused",
                                f"Origin: {origin!r} is not this server's origin; writes from other "
                                "web sites are refused", "Origin")
        if method in _BODY_METHODS and path.startswith("/api/v1") and (
                ctype is None or ctype.split(b";", 1)[0].strip().lower() != b"application/json"):
            return _refusal(415, "unsupported_media_type", "Content-Type: must be application/json", "Content-Type")
        return None

    @staticmethod
    def _same_origin(origin: str, name: str, port: str) -> bool:
        o_scheme, sep, netloc = origin.strip().lower().partition("://")
        if not sep or "/" in netloc:
            return False           # "null" (sandboxed or file: pages) and anything malformed
        o_name, o_port = _split_host(netloc)
        o_port = o_port or _DEFAULT_PORT.get(o_scheme, "")
        # Behind a TLS-terminating proxy the Host has no port while the origin is https:
        # compare the port the browser used with the Host's, defaulting both by the origin's scheme.
        return o_name == name and o_port == (port or _DEFAULT_PORT.get(o_scheme, ""))
