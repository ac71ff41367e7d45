"""Run reports the server takes whole: the exporter's JSON-safe copies of a run's config and
summary, and its name, project, entity and group, carry neither NUL (the server refuses it:
PostgreSQL's JSON cannot hold it) nor a lone surrogate (no JSON encoder takes one; os.environ
gives them for undecodable bytes): U+FFFD stands in for each, so the report is sent and stored.
A real wandb run with NUL is in tests/core/test_wandb_capture.py."""

from primus_lens_wandb_exporter.core.recorder.runs import _text
from primus_lens_wandb_exporter.core.recorder.stats import _jsonable
from primus_lens_wandb_exporter.sinks.http_delivery import _encode


def test_nul_and_lone_surrogates_become_the_replacement_character():
    config = {"k\udcff": ["v\ud800", "a\x00b", "pair \ud83d\ude00 kept"], "n": 1, "x": 0.5}
    out = _jsonable(config)
    assert out == {"k\ufffd": ["v\ufffd", "a\ufffdb", "pair \U0001f600 kept"], "n": 1, "x": 0.5}
    assert _text("\udcff-run") == "\ufffd-run" and _text(None) is None and _text("g" * 600) == "g" * 512
    body = _encode({"name": _text("\udcff-run"), "config": out})  # raised UnicodeEncodeError before
    assert "\ufffd-run".encode() in body
