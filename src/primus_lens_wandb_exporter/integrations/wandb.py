"""The raw wandb integration: sees every metric the user's W&B run sees.

Patched at class level when ``wandb`` is imported (before any ``wandb.init``):

- ``Run._log``: ``wandb.log``, ``run.log`` and every framework logger end here;
- ``NoopRun.log`` (``WANDB_MODE=disabled`` overrides ``log`` and never reaches ``_log``);
- ``Run._summary_update_callback`` / ``Run._config_callback``: bound when a Run is
  created, so class-level patches made now are the ones bound. The callback sees only
  explicit ``run.summary`` writes and deletes; the rest of W&B's summary (each key's last
  value, ``define_metric`` summary options) is derived in the worker (core/recorder/summary.py);
- ``Run._define_metric`` (``NoopRun.define_metric``): W&B's custom x axes (``trainer/global_step``
  ...) become Lens steps, by wandb's own rules (``core/steps.py``), and its ``summary`` options;
- ``wandb.init`` / ``Run.finish``: run identity, then a bounded flush.

The patched calls only append to the Recorder's queue; what W&B receives is
unchanged (system metrics are added only when the user turns them on).
"""

import functools
import inspect
import sys

from ..core import patching
from ..core.integration import Integration, VersionRange, Watch
from ..core.log import get_logger
from ..core.recorder import get_recorder

NAME = "wandb"
#: W&B is not a training framework (nothing to detect): it is the stream every framework logs to.
WANDB = Integration(
    name=NAME, module=__name__, watches=(Watch("wandb"),),
    # Oldest tested: 0.19.11 (tox.ini env wandb-floor); no upper bound.  wandb always has a version.
    versions=VersionRange((0, 19, 0)), version_of=lambda wandb: getattr(wandb, "__version__", "0"))
INTEGRATIONS = (WANDB,)


def raw_wandb_active():
    """This integration mirrors W&B runs: whatever reaches a W&B run reaches Lens.

    Adapters ask before reporting a framework's metrics themselves, so that nothing is
    counted twice and nothing is lost.  Before ``import wandb`` (Bridge and Lightning
    create their W&B run lazily) the answer is whether the patch *will* be installed: it
    is, on import, unless hooking or this integration is switched off
    (``PRIMUS_LENS_WANDB_HOOK``, ``PRIMUS_LENS_DISABLED_INTEGRATIONS``).
    """
    run_module = sys.modules.get("wandb.sdk.wandb_run")
    if run_module is None:
        from ..core.autoload import disabled_integrations, hook_enabled

        disabled = disabled_integrations()
        return hook_enabled() and NAME not in disabled and "*" not in disabled
    run_cls = getattr(run_module, "Run", None)
    return run_cls is not None and patching.is_patched(run_cls, "_log")


def setup(wandb):
    """Right after ``import wandb`` (or ``install()``), once the registry's gate passed."""
    version = getattr(wandb, "__version__", "0")
    from wandb.sdk import wandb_run

    recorder = get_recorder()
    Run = wandb_run.Run
    patching.patch(Run, "_log", recorder.log_hook())
    patching.patch(Run, "_summary_update_callback", _make_summary(recorder))
    patching.patch(Run, "_config_callback", _make_config(recorder))
    # _define_metric: what define_metric and wandb's own callers end in (NoopRun overrides
    # define_metric and never gets there).
    patching.patch(Run, "_define_metric" if hasattr(Run, "_define_metric") else "define_metric",
                   _make_define_metric(recorder))
    patching.patch(Run, "finish", _make_finish(recorder))
    try:
        from wandb.sdk.lib import noop_run

        patching.patch(noop_run.NoopRun, "log", recorder.log_hook())
        patching.patch(noop_run.NoopRun, "define_metric", _make_define_metric(recorder, Run.define_metric))
        patching.patch(noop_run.NoopRun, "finish", _make_finish(recorder))
    except ImportError:  # older wandb: disabled mode used a different object
        pass
    init_wrapper = None
    for owner in (wandb, sys.modules.get("wandb.sdk"), sys.modules.get("wandb.sdk.wandb_init")):
        if owner is not None and hasattr(owner, "init"):
            init_wrapper = patching.patch(owner, "init", _make_init(recorder))
    wandb._primus_lens_patched = True
    get_logger().debug("WandB hook installed (wandb %s, Run._log/NoopRun.log/init/finish patched)", version)
    return init_wrapper


def _key_name(key):
    """A W&B summary/config key (a string or a nested path) as one dotted name."""
    return key if isinstance(key, str) else ".".join(map(str, key))


def _report_summary(recorder, run, summary_record, *args, **kwargs):
    items = {}
    for item in getattr(summary_record, "update", ()) or ():
        items[_key_name(item.key)] = item.value
    removed = [_key_name(item.key) for item in getattr(summary_record, "remove", ()) or ()]
    if items or removed:
        recorder.summary_update(run, items, removed)


def _report_config(recorder, run, key=None, val=None, data=None, *args, **kwargs):
    if data is not None:
        recorder.config_update(run, dict(data))
    elif key is not None:
        recorder.config_update(run, {_key_name(key): val})


def _report_define_metric(recorder, run, name, step_metric=None, step_sync=None, overwrite=None, summary=None,
                          **_):
    # Every call counts, with or without a step metric: a key defined by name is no longer
    # matched by globs (core/steps.py), and its summary options are (re)applied (summary.py).
    if isinstance(name, str) and name:
        metric_name = getattr(step_metric, "name", step_metric)
        recorder.define_metric(run, name, str(metric_name) if metric_name else None,
                               step_sync if isinstance(step_sync, bool) else None, bool(overwrite),
                               summary if isinstance(summary, str) else None)


def _make_summary(recorder):
    """``Run._summary_update_callback``: explicit summary writes and deletes (HF writes its final
    metrics only there)."""
    return patching.then("wandb summary", functools.partial(_report_summary, recorder))


def _make_config(recorder):
    return patching.then("wandb config", functools.partial(_report_config, recorder))


def _make_define_metric(recorder, api=None):
    def make(original):
        # Bound by name: the parameters after step_sync differ between wandb versions;
        # ``api`` gives them where the patched method takes (*args, **kwargs) (NoopRun).
        try:
            signature = inspect.signature(api or original)
        except (TypeError, ValueError):
            signature = None

        def report(*args, **kwargs):
            if signature is None:
                return
            bound = signature.bind(*args, **kwargs).arguments
            _report_define_metric(recorder, args[0], bound.get("name"), bound.get("step_metric"),
                                  bound.get("step_sync"), bound.get("overwrite"), bound.get("summary"))
        return patching.then("wandb define_metric", report)(original)
    return make


def _make_init(recorder):
    def report(run, *args, **kwargs):
        if run is not None:
            _wrap_instance_methods(recorder, run)
            recorder.run_started(run)
            get_logger().debug("intercepted wandb.init (run %s)", getattr(run, "id", None))
    return patching.then("wandb.init", report, result=True)


def _wrap_instance_methods(recorder, run):
    """wandb < 0.20 builds its disabled-mode run with *instance* ``log``/``finish`` lambdas
    (and binds ``wandb.log`` to them during init), which class-level patches never see."""
    own = getattr(run, "__dict__", None) or {}
    wandb = sys.modules.get("wandb")
    if callable(own.get("log")) and not hasattr(own["log"], patching.MARK):
        plain_log = own["log"]
        wrapped = recorder.log_hook()(lambda self, data, step=None, commit=None, *a, **k: plain_log(data, step, commit, *a, **k))

        def log(data, step=None, commit=None, *args, **kwargs):
            return wrapped(run, data, step, commit, *args, **kwargs)

        setattr(log, patching.MARK, plain_log)
        run.log = log
        if wandb is not None and getattr(wandb, "log", None) is plain_log:
            wandb.log = log
    if callable(own.get("finish")) and not hasattr(own["finish"], patching.MARK):
        plain_finish = own["finish"]
        wrapped_finish = _make_finish(recorder)(lambda self, exit_code=None, *a, **k: plain_finish(exit_code, *a, **k))

        def finish(exit_code=None, *args, **kwargs):
            return wrapped_finish(run, exit_code, *args, **kwargs)

        setattr(finish, patching.MARK, plain_finish)
        run.finish = finish


def _make_finish(recorder):
    def report(run, exit_code=None, *args, **kwargs):
        recorder.run_finished(run, exit_code or 0)
        recorder.flush()
    # Also when W&B's finish raised: the run is over for Lens either way.
    return patching.then("wandb.finish", report, always=True)
