"""Credentials out of URL-shaped values: ``scheme://user:pass@host`` -> ``scheme://***@host``.

One definition for both sides: the exporter builds detection evidence from the
environment (where ``PRIMUS_LENS_API_BASE_URL=http://lens:hunter2@...`` or a database
URL with a password may sit under a harmless variable name), and the server redacts
again before storing, for clients that did not (defence in depth).  Pure standard
library, so the server imports it without the exporter's internals.
"""

from __future__ import annotations

import re
from typing import Any

#: What replaces the user-info part of a URL.
REDACTED = "***"

# scheme "://" user-info "@": the user-info runs up to the LAST "@" before the host's
# end ("/", "?", "#", whitespace or a quote), so an unencoded "@" in a password is covered too.
# Any scheme (http, postgresql+psycopg, redis, s3, ...), anywhere in the string.
_URL_USERINFO = re.compile(r"""([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s"'<>@]*(?:@[^/?#\s"'<>@]*)*@""")


def redact_url_credentials(value: Any) -> Any:
    """``value`` with the user-info of every URL in every string replaced by ``***``.

    Walks dicts (values; keys too when they are strings), lists and tuples, and
    returns new containers; anything else is returned unchanged.  A string without
    ``://`` is returned as is (the common case costs one substring test).
    """
    if isinstance(value, str):
        if "://" not in value or "@" not in value:
            return value
        return _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", value)
    if isinstance(value, dict):
        return {redact_url_credentials(k) if isinstance(k, str) else k: redact_url_credentials(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_url_credentials(v) for v in value)
    return value
