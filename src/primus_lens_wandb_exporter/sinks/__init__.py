"""Sinks: the objects the recorder hands batches, detection and runs to.

A sink is built from the config by a ``lens_make_sinks(config, identity, on_problem)``
hookimpl -- the built-in HTTP (``sinks/http.py``) and JSONL (``sinks/jsonl.py``) sinks
exactly like a third-party plugin's -- once per process, by the recorder's worker (a
forked child builds its own).  A sink never reaches back into the recorder: what it
needs comes in through those three arguments (``on_problem``: "write the stats file
soon", e.g. the spool disk failed).
"""

import logging
from typing import Callable, List, Protocol, runtime_checkable

from ..core.log import log_once, raise_if_testing

#: Stats of the built-in sinks when they are off (``primus-lens doctor`` prints "off").
OFF_STATS = {"http": None, "jsonl": None}


@runtime_checkable
class Sink(Protocol):
    name: str

    def report_metrics(self, batch) -> None:
        """A :class:`~primus_lens_wandb_exporter.core.recorder.MetricBatch` (worker thread; must not block long)."""

    def report_detection(self, detection: dict) -> None: ...

    def report_run(self, run: dict, event: str) -> None: ...

    def flush(self, deadline: float) -> None:
        """Deliver or persist everything before ``deadline`` (``time.monotonic()``)."""

    def stats(self) -> dict: ...

    def close(self) -> None:
        """Drop this process's resources (a forked child's copy, tests)."""


def build_sinks(plugin_manager, config, identity, on_problem: Callable[[], None]) -> List[Sink]:
    """Every sink the ``lens_make_sinks`` hookimpls build for this config (a failing one is skipped)."""
    from ..core.registry import call_safely

    sinks = []
    for made in call_safely(plugin_manager.hook.lens_make_sinks, config=config, identity=identity,
                            on_problem=on_problem):
        sinks.extend(made if isinstance(made, (list, tuple)) else [made])
    return sinks


def call_sinks(sinks, method: str, *args) -> None:
    """``sink.<method>(*args)`` on each sink; one that raises is logged once and skipped."""
    for sink in sinks:
        try:
            getattr(sink, method)(*args)
        except Exception as exc:
            name = getattr(sink, "name", type(sink).__name__)
            log_once(("sink", name, method), logging.WARNING, "sink %s failed in %s: %r", name, method, exc)
            raise_if_testing(exc)
