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
#: Characters that end a URL's host part ("user:password@host" has none of them before its "@").
_HOST_END = re.compile(r"""[/?#"'<>]""")


def _redact_text(s: str) -> str:
    """``s`` with the user-info of every URL replaced; linear in ``len(s)``.

    The user-info ends at an "@" of the URL's word (up to whitespace):
    - no "/", "?", "#" or quote before the first "@": it runs to the last "@" before the
      host's end, so an unencoded "@" in a password is covered (``u:p@ss@db:5432/x``) and a
      later "@" in the path or query is not taken (``mongodb://u:p@h1,h2/db?x=a@b``);
    - one of those first: the "@" may be in the path (``http://host/a@b``,
      ``https://h:443/@types/node``, ``http://[::1]:8080/a@b``: nothing to redact) or the
      password may hold it (``postgresql://u:pa/ss@db``, AWS secret keys hold "/"): it is a
      password when the part before that character has a ":" not followed by a port number
      (digits only), and then the user-info runs to the last "@" before the next host end.
      A password of digits with an unencoded "/" after them is read as a port: kept.
    Written as a scan rather than one regular expression, which backtracked over the rest of
    the word at every "://" in it (seconds for a 100 KB value of many URLs).
    """
    out, done, i, n = [], 0, 0, len(s)
    word_end = first_at = -1  # of the whitespace-free word the last URL start was in
    while True:
        m = _SCHEME.search(s, i)
        if m is None:
            break
        u = m.end()
        if u > word_end:  # a new word
            sp = _SPACE.search(s, u)
            word_end = sp.start() if sp else n
            first_at = -1
        if first_at < u:  # the first "@" after this start (each stretch of the word is searched once)
            first_at = s.find("@", u, word_end)
            if first_at < 0:  # none in the rest of the word: no later start in it has one either
                first_at, i = word_end, word_end
                continue
        h = _HOST_END.search(s, u, first_at)
        if h is None:
            he = _HOST_END.search(s, first_at, word_end)
            cut = s.rfind("@", u, he.start() if he else word_end)
        else:
            auth = s[u:h.start()]
            colon = auth.rfind(":")
            if colon < 0 or auth[colon + 1:].isdigit() or auth.startswith("["):
                i = u  # "host/...@", "host:port/...@", "[v6]...": no user-info
                continue
            he = _HOST_END.search(s, first_at, word_end)
            cut = s.rfind("@", first_at, he.start() if he else word_end)
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
