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

# A URL's start: a scheme (http, postgresql+psycopg, redis, s3, ...) and "://", not inside a
# longer run of scheme characters (so a search tries each run once: linear time).
_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
_SPACE = re.compile(r"\s")
#: Characters that end a URL's host part, and that a user name (before its ":") never holds.
_HOST_END = re.compile(r"""[/?#"'<>]""")
_USER_BAD = re.compile(r"""[/?#"'<>@]""")


def _redact_text(s: str) -> str:
    """``s`` with the user-info of every URL replaced; linear in ``len(s)``.

    The user-info of a URL ends at an "@" before the next whitespace, in one of two shapes:
    - "user:password@": after a user name (none of ``/?#"'<>@``) and its ":", the password
      runs to the LAST "@" before whitespace, so an unencoded "/", "?", "#", quote or "@" in
      it (AWS secret keys hold "/") is covered.  A URL with a port and an "@" later in its
      path ("http://h:80/a/@b") loses its host too: safe, and rare.
    - otherwise ("token@"): up to the last "@" before the host's end ("/", "?", "#", a
      quote), so "http://host/path@x" is left alone.
    Written as a scan rather than one regular expression: the first shape backtracks over the
    rest of the word for every "://" in it (seconds for a 100 KB value of many URLs).
    """
    out, done, i, n = [], 0, 0, len(s)
    word_end = last_at = -1  # of the whitespace-free word the last URL start was in
    while True:
        m = _SCHEME.search(s, i)
        if m is None:
            break
        u = m.end()
        if u > word_end:  # a new word: where it ends and its last "@"
            sp = _SPACE.search(s, u)
            word_end = sp.start() if sp else n
            last_at = s.rfind("@", u, word_end)
        if last_at < u:  # no "@" after this start in its word: nor after any later one
            i = word_end
            continue
        colon = s.find(":", u, last_at)
        if colon >= 0 and not _USER_BAD.search(s, u, colon):
            cut = last_at
        else:
            h = _HOST_END.search(s, u, last_at)
            cut = last_at if h is None else s.rfind("@", u, h.start())
            if cut < 0:
                i = u
                continue
        out.append(s[done:u])
        out.append(REDACTED)
        done = cut  # the "@" stays
        i = cut + 1
    out.append(s[done:])
    return "".join(out)


def redact_url_credentials(value: Any) -> Any:
    """``value`` with the user-info of every URL in every string replaced by ``***``.

    Walks dicts (values; keys too when they are strings), lists and tuples, and
    returns new containers; anything else is returned unchanged.  A string without
    ``://`` is returned as is (the common case costs one substring test).
    """
    if isinstance(value, str):
        if "://" not in value or "@" not in value:
            return value
        return _redact_text(value)
    if isinstance(value, dict):
        return {redact_url_credentials(k) if isinstance(k, str) else k: redact_url_credentials(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_url_credentials(v) for v in value)
    return value
