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

#: Characters of a URL scheme (http, postgresql+psycopg, git+ssh ...).
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_SPACE = re.compile(r"\s")
#: Characters that end a URL's host part ("user:password@host" has none of them before its "@").
_HOST_END = re.compile(r"""[/?#"'<>]""")


def _url_start(s: str, i: int):
    """``(scheme, end)`` of the first "scheme://" at or after ``i`` (``end`` just past "://"), or
    None.  Found by its "://", then the scheme read backwards: a search for the scheme itself
    tried every position of a long run of scheme characters (quadratic)."""
    while True:
        p = s.find("://", i)
        if p < 0:
            return None
        j = p
        while j > i and s[j - 1] in _SCHEME_CHARS:
            j -= 1
        scheme = s[j:p]
        k = next((n for n, c in enumerate(scheme) if c.isalpha()), None)  # "1.https": "https"
        if k is not None:
            return scheme[k:], p + 3
        i = p + 3


def _redact_text(s: str) -> str:
    """``s`` with the user-info of every URL replaced; linear in ``len(s)``.

    The user-info ends at an "@" of the URL's word (up to whitespace):
    - no "/", "?", "#" or quote before the first "@": it runs to the last "@" before the
      host's end, so an unencoded "@" in a password is covered (``u:p@ss@db:5432/x``) and a
      later "@" in the path or query is not taken (``mongodb://u:p@h1,h2/db?x=a@b``);
    - one of those first: the "@" may be in the path (``http://host/a@b``,
      ``https://h:443/@types/node``, ``docker://reg:5000/team/img@sha256:..``,
      ``http://[::1]:8080/a@b``: nothing to redact) or the password may hold it
      (``postgresql://u:pa/ss@db``; AWS secret keys hold "/").  It is a password when the part
      before that character has a ":" and what follows the ":" is not a port (digits, or
      nothing), or is digits but the "@" ends the next path segment (``u:0/abc@db``; but
      ``http://h:80/a@b`` then loses its host too: safe).  In an ssh URL a ":" after the host
      starts the path (``git+ssh://github.com:org/repo.git@v1``): only the first shape applies.
      Then the user-info runs to the last "@" before the next host end.
    Written as a scan rather than one regular expression, which backtracked over the rest of
    the word at every "://" in it (seconds for a 100 KB value of many URLs).
    """
    out, done, i, n = [], 0, 0, len(s)
    word_end = first_at = -1  # of the whitespace-free word the last URL start was in
    while True:
        found = _url_start(s, i)
        if found is None:
            break
        scheme, u = found
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
            after = auth[colon + 1:]
            port = after == "" or after.isdigit()
            # A port followed by one path segment and the "@" ("u:0/abc@db"): a password.
            segment = port and h.group() == "/" and _HOST_END.search(s, h.end(), first_at) is None \
                and h.end() < first_at
            if colon < 0 or auth.startswith("[") or scheme.lower().endswith("ssh") or (port and not segment):
                i = u  # "host/...@", "host:port/.../...@", "[v6]...", an ssh path: no user-info
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
