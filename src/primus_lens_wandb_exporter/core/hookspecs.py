"""Hook specifications of the ``primus_lens`` pluggy project.

Built-in integrations and sinks implement these exactly like third-party plugins
(entry-point group ``primus_lens``).  pluggy passes an implementation only the
arguments it names, so hooks can grow arguments without breaking plugins.
Every hook is called on the Recorder's background thread, never on the training
thread; an implementation that raises is logged and skipped (it never reaches
training).
"""

import pluggy

PROJECT = "primus_lens"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- detection -------------------------------------------------------------------

@hookspec
def lens_detect_frameworks(context):
    """Return evidence of frameworks in use, or ``None``.

    ``context`` is a :class:`~primus_lens_wandb_exporter.core.detection.DetectionContext`
    (loaded module names, environment, wandb config).  Return a list of
    :class:`~primus_lens_wandb_exporter.core.detection.Evidence`.  Must not import a
    framework, initialise a device or start a process.  Heuristic evidence only:
    adapters that the framework itself calls claim exactly through
    ``Recorder.claim`` instead.
    """


# --- reporting (sinks) -----------------------------------------------------------

@hookspec
def lens_make_sinks(config, identity, on_problem):
    """Return this process's sink objects for ``config``, or ``None`` (this sink is off).

    Called once per process by the recorder's worker (again in a forked child).  A sink
    has the methods of :class:`~primus_lens_wandb_exporter.sinks.Sink` (``report_metrics(batch)``,
    ``report_detection``, ``report_run``, ``flush(deadline)``, ``stats()``, ``close()``);
    the recorder calls them before the ``lens_report_*`` hooks below.  ``config`` is the
    :class:`~primus_lens_wandb_exporter.core.config.Config`, ``identity`` the
    :class:`~primus_lens_wandb_exporter.core.identity.Identity`; ``on_problem()`` asks the
    recorder to write its stats file soon (a sink saw something ``primus-lens doctor``
    must show).  A sink needs nothing else from the recorder.
    """


@hookspec
def lens_report_metrics(batch):
    """Deliver a :class:`~primus_lens_wandb_exporter.core.recorder.MetricBatch`.

    Called for every batch; each sink decides what to do with it (HTTP, JSONL ...).
    Must not block for long: a slow sink queues internally.
    """


@hookspec
def lens_report_detection(detection):
    """Deliver the detection payload (a dict in the wire format) when it changes."""


@hookspec
def lens_report_run(run, event):
    """Deliver run metadata: ``run`` is a wire-format dict, ``event`` one of
    ``started``, ``config``, ``summary``, ``finished``."""


@hookspec
def lens_flush(deadline):
    """Deliver or persist everything pending before ``deadline`` (``time.monotonic()``)."""


@hookspec
def lens_sink_stats():
    """Return a dict of counters for ``primus-lens doctor`` and the debug log."""


# --- lifecycle -------------------------------------------------------------------

@hookspec
def lens_run_started(run):
    """A W&B run started: ``run`` is the wire-format run dict."""


@hookspec
def lens_run_finished(run, status):
    """A W&B run finished (``status``: ``finished`` or ``failed``)."""
