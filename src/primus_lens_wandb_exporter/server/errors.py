"""The one error type the API raises: rendered as ``{"error", "message", "field"}``."""

from __future__ import annotations

from typing import Optional


class ApiError(Exception):
    """An error answered to the client with ``status`` and a message naming ``field``."""

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict:
        """The JSON error body of the protocol."""
        out = {"error": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out
