"""Structured logging: every server log line is one JSON object on stderr."""

from __future__ import annotations

import logging
import sys
import time

import orjson


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message"}``; access lines are already JSON and pass through."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "primus_lens.server.access":
            return record.getMessage()
        out = {"ts": round(record.created if record.created else time.time(), 3), "level": record.levelname,
               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def configure(level: str = "info") -> None:
    """Send the server's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    lvl = getattr(logging, level.upper(), logging.INFO)
    for name in ("primus_lens", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(lvl)
        lg.propagate = False
    # Access lines are written by our middleware (with timing); uvicorn's own are off.
    logging.getLogger("uvicorn.access").disabled = True
    # --log-level warning must still keep access lines out only when asked for.
    logging.getLogger("primus_lens.server.access").setLevel(lvl)
