"""Credentials out of URL-shaped values (issue 11, item 5): the one helper both sides use,
and the exporter's detection payload built with it."""

from types import SimpleNamespace

import pytest

from primus_lens_wandb_exporter.core.detection import build_payload
from primus_lens_wandb_exporter.redact import redact_url_credentials


@pytest.mark.parametrize("value, expected", [
    ("http://lens:hunter2@lens:8080/api/v1", "http://***@lens:8080/api/v1"),
    ("postgresql+psycopg://u:p@ss@db:5432/x?sslmode=require", "postgresql+psycopg://***@db:5432/x?sslmode=require"),
    ("https://TOKEN@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
    ("redis://:pw@r:6379/0", "redis://***@r:6379/0"),
    ("two: s3://k:s@b/p and amqp://g:g@mq", "two: s3://***@b/p and amqp://***@mq"),
    ("http://host/path@not-userinfo", "http://host/path@not-userinfo"),
    ("user@example.com", "user@example.com"),
    ("http://plain.example:80/x", "http://plain.example:80/x"),
    # Unencoded "/", "?", "#" or a quote in a password (AWS secret keys hold "/"): were kept whole.
    ("postgresql://u:pa/ss@db/x", "postgresql://***@db/x"),
    ("redis://:p?w@h:6379", "redis://***@h:6379"),
    ('s3://AKIA:se"cret@b/k', "s3://***@b/k"),
    ("postgresql://u:p#w@db", "postgresql://***@db"),
    ("s3://AKIA:a/b+c/d@bucket/key and http://x/y", "s3://***@bucket/key and http://x/y"),
    ("postgresql://u:p/a@ss@db/x", "postgresql://***@db/x"),
    # An "@" later in the path or query is not user-info (the first rewrite took these whole).
    ("mongodb://u:p@h1,h2:27017/db?x=a@b", "mongodb://***@h1,h2:27017/db?x=a@b"),
    ("docker://registry.example.com:5000/team/img@sha256:abc", "docker://registry.example.com:5000/team/img@sha256:abc"),
    ("https://api.example.com:443/users?email=me@x.com", "https://api.example.com:443/users?email=me@x.com"),
    ("http://localhost:8080/static/@vite/client", "http://localhost:8080/static/@vite/client"),
    ("https://registry.npmjs.org:443/@types/node", "https://registry.npmjs.org:443/@types/node"),
    ("http://[::1]:8080/a@b", "http://[::1]:8080/a@b"),
    # A scheme right after ".", "-", "+" or a digit (the first rewrite skipped these).
    ("1.https://u:secret@h/x", "1.https://***@h/x"), ("--postgresql://u:secret@db/x", "--postgresql://***@db/x"),
    ("...postgresql://u:secret@db/x", "...postgresql://***@db/x"), ("+redis://:secret@r/0", "+redis://***@r/0"),
    # Digits then "/" in a password: one path segment before the "@" is a password, not a port.
    ("postgresql://u:0/abc@db/x", "postgresql://***@db/x"), ("postgresql://u:123/abc@db/x", "postgresql://***@db/x"),
    # In ssh URLs a ":" after the host starts the path (scp style): kept.
    ("git+ssh://github.com:org/repo.git@v1.0", "git+ssh://github.com:org/repo.git@v1.0"),
    ("ssh://gitlab.example.com:group/proj.git@main", "ssh://gitlab.example.com:group/proj.git@main"),
    ("ssh://git@github.com/org/repo", "ssh://***@github.com/org/repo"),
])
def test_url_credentials_are_replaced(value, expected):
    assert redact_url_credentials(value) == expected


def test_nested_values_are_walked_and_other_types_kept():
    value = {"a": ["http://u:hunter2@h", ("ftp://x:hunter2@f",)], "n": 1, "f": 0.5, "none": None,
             "d": {"e": {"f": "ws://a:hunter2@w"}}}
    out = redact_url_credentials(value)
    assert "hunter2" not in repr(out)
    assert out["n"] == 1 and out["f"] == 0.5 and out["none"] is None
    assert out["a"][1] == ("ftp://***@f",)


def test_the_exporters_detection_payload_has_no_url_credentials():
    # Variable names is_secret() does not know: only the URL shape gives them away.
    environ = {"PRIMUS_LENS_API_BASE_URL": "http://lens:hunter2@lens.example:8080/api/v1",
               "PRIMUS_DB_URL": "postgresql://app:hunter2@db:5432/lens", "WANDB_BASE_URL": "https://k:hunter2@wb"}
    ident = SimpleNamespace(workload_uid="w", pod_uid=None, pod_name="p", namespace=None)
    payload = build_payload([], [], ident, environ, {"id": "r1", "url": "https://u:hunter2@wandb.example/r1"},
                            frozenset())
    assert "hunter2" not in repr(payload)
    assert payload["evidence"]["environment"]["PRIMUS_DB_URL"] == "postgresql://***@db:5432/lens"


@pytest.mark.parametrize("value", ["@" + "a://b:" * 60_000, "@" + "a://b/" * 60_000, "a" * 400_000 + "://x/@",
                                   "a1" * 200_000 + "://x/@"])
def test_a_value_of_many_url_starts_is_redacted_without_backtracking(value):
    """One regular expression for both shapes backtracked over the rest of the word at every
    "://": 9 s for 120 KB, so a detection body of such a value held a server thread for
    minutes.  The scan is linear; the thread's timeout is a hang detector, not a speed check."""
    import threading

    done = []
    t = threading.Thread(target=lambda: done.append(redact_url_credentials(value)), daemon=True)
    t.start()
    t.join(60)
    assert done == [value]  # no user-info in any of them: kept as is
