"""The one ASGI layer every request passes: count, headers, access line, roles, browser guard, ingest.

It does, in the order the four separate layers did before (docs/capacity-log.md, "The outer layers":
they were ~16 % of the server's Python time per small ingest request):

1. Prometheus: count and time the request by route template (:mod:`.metrics`);
2. the security headers on every answer, keeping a route's own CSP (:mod:`.security`);
3. one JSON access line per request (``primus_lens.server.access``);
4. the role check for ``/api/v1`` (:mod:`.auth`): 401/403 before anything else;
5. the browser guard (:mod:`.security`): Host 400, cross-origin write 403, non-JSON body 415;
6. the four ingest POSTs, answered here without FastAPI (:mod:`.ingest`).

A request refused by 4 or 5, or an ingest POST, is answered directly with header
lists built once; every other request goes on to FastAPI through one ``send``
wrapper.  The headers, refusals, log lines and counts are those of the separate
layers (tests/server/test_server_security.py, test_server_roles.py, test_server_ops.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict

import orjson

from . import auth, ingest, security

access_log = logging.getLogger("primus_lens.server.access")

_INFO = logging.INFO
_CSP_NAMES = (b"content-security-policy", b"Content-Security-Policy")
_START, _BODY = "http.response.start", "http.response.body"
_JSON = (b"content-type", b"application/json")


def _access_line(method, path: str, query: bytes, status: int, nbytes: int, seconds: float, client) -> None:
    """Log one access line (the JSON object is the whole message).

    The record is built directly: ``Logger.info`` would also look up the caller's
    frame (``findCaller``), which nothing in the line uses; handlers, levels and
    propagation are the logger's as usual.
    """
    if not access_log.isEnabledFor(_INFO):
        return
    line = orjson.dumps({
        "ts": round(time.time(), 3), "event": "access", "method": method, "path": path,
        "query": query.decode("latin-1")[:512], "status": status, "bytes": nbytes, "ms": round(seconds * 1000, 2),
        "client": f"{client[0]}:{client[1]}" if client else None}).decode()
    access_log.handle(logging.LogRecord(access_log.name, _INFO, __file__, 0, line, None, None))


class Edge:
    """ASGI middleware: the outer layers of the Lens API in one (see the module doc)."""

    def __init__(self, app, *, guard: security.BrowserGuard, tokens: auth.Tokens, ingest_path: ingest.IngestPath,
                 routes: Dict[str, Any], metrics=None):
        self.app = app
        self.guard = guard
        self.tokens = tokens if tokens.enabled else None
        self.ingest = ingest_path
        self.routes = routes  # ingest path -> its FastAPI route (put in the scope, for /metrics' label)
        self.observe = metrics.observe if metrics is not None else None
        self.extra = list(security.SECURITY_HEADERS)
        self.csp = (b"content-security-policy", security.DEFAULT_CSP.encode())
        self.with_csp = [self.csp, *self.extra]  # what every answer without its own CSP gains

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"]
        method = scope["method"]
        host = origin = ctype = authorization = length = None
        # One pass over the headers; which occurrence counts is as each check read it
        # (the guard the last Host/Origin/Content-Type, the others the first).
        for k, v in scope["headers"]:
            if k == b"host":
                host = v
            elif k == b"origin":
                origin = v
            elif k == b"content-type":
                ctype = v
            elif k == b"authorization":
                if authorization is None:
                    authorization = v
            elif k == b"content-length":
                if length is None:
                    length = v
        status = nbytes = 0
        try:
            answer = None  # (status, body, headers) answered here
            if self.tokens is not None:
                # Matched as the router will: without a root_path the ASGI server may have put in front.
                root = scope.get("root_path") or ""
                route_path = path[len(root):] if root and path.startswith(root) else path
                if route_path.startswith(auth.API_PREFIX):
                    err = self.tokens.check(authorization, method, route_path)
                    if err is not None:
                        answer = auth.refusal(err)
            if answer is None:
                answer = self.guard.check(scope, host, origin, ctype, method, path)
            if answer is None and method == "POST" and path in ingest.PREPARE:
                route = self.routes.get(path)
                if route is not None:
                    scope["route"] = route
                out = await self.ingest.handle(path, length, ingest.asgi_chunks(receive))
                if out is None:  # the client went away: nobody to answer
                    return
                code, body, extra = out
                answer = code, body, [(b"content-length", str(len(body)).encode()), _JSON, *extra]
            if answer is not None:
                status, body, headers = answer
                headers.extend(self.with_csp)
                await send({"type": _START, "status": status, "headers": headers})
                nbytes = len(body)
                await send({"type": _BODY, "body": body})
                return
            box = [0, 0]
            with_csp, extra = self.with_csp, self.extra

            async def send_wrapper(message):
                t = message["type"]
                if t == _START:
                    box[0] = message["status"]
                    headers = list(message.get("headers", ()))
                    for k, _ in headers:
                        if k in _CSP_NAMES:
                            headers.extend(extra)
                            break
                    else:
                        headers.extend(with_csp)
                    message = {**message, "headers": headers}
                elif t == _BODY:
                    box[1] += len(message.get("body", b""))
                await send(message)

            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                status, nbytes = box
        finally:
            _access_line(method, path, scope.get("query_string", b""), status, nbytes,
                         time.perf_counter() - start, scope.get("client"))
            if self.observe is not None:
                route = scope.get("route")
                # The router stores the matched route in the scope; its template keeps ids out of labels.
                # 500: what the client sees if the app raised before answering.
                self.observe(method, getattr(route, "path", None) or "other", status or 500,
                             time.perf_counter() - start)
