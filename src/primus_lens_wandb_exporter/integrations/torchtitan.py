"""TorchTitan adapter: ``MetricsProcessor.log`` is the one place every training metric passes.

``MetricsProcessor.log(step, global_avg_loss, global_max_loss, grad_norm,
extra_metrics=None)`` (v0.2.2 and 0.3.0; an older main had ``ntokens_seen`` 5th: we bind
by name) builds the metrics dict and hands it to ``self.logger.log(metrics, step)``.
We wrap ``MetricsProcessor.log`` and, only while it runs, see that dict at the first
logger it reaches (``BaseLogger.log`` and the module's subclasses are wrapped too), so
Lens gets TorchTitan's own names: ``loss_metrics/global_avg_loss``, ``grad_norm``,
``throughput(tps)``, ``tflops``, ``mfu(%)``, ``memory/*``, ``time_metrics/*``, ``lr`` ...

Exactly once: when the processor's logger includes TorchTitan's ``WandBLogger`` (which
calls ``wandb.log(metrics, step=step)``), the W&B stream is the source and we only claim.
Otherwise we report the dict ourselves (``source="torchtitan"``, ``step=step``) from the
rank TorchTitan logs metrics on: 0, or the first rank of the last pipeline stage under
pipeline parallelism (``ZBVZeroBubble``: 0); every rank with ``save_for_all_ranks``.
"""

import os
import sys
import threading
import weakref

from ..core import patching
from ..core.detection import dist_version
from ..core.identity import dist_rank_world
from ..core.integration import BASE, Framework, Hint, Integration, NotEnabled, VersionRange, Watch
from ..core.log import get_logger
from ..core.recorder import get_recorder
from .wandb import raw_wandb_active

NAME = "torchtitan"
FRAMEWORK = Framework(NAME, BASE, ("torchtitan",), (
    Hint("module", "torchtitan.train", 0.7),
    Hint("module", "torchtitan.components", 0.6),
))


class _State:
    """What the adapter remembers per process (``TORCHTITAN.state``)."""

    def __init__(self):
        self.local = threading.local()                # capture flag + captured dict, per thread
        self.pp_schedules = weakref.WeakKeyDictionary()  # 0.3.0 passes pp_schedule to __init__ only
        self.claimed = False


TORCHTITAN = Integration(
    name=NAME, module=__name__, state=_State(), frameworks=(FRAMEWORK,),
    watches=(Watch("torchtitan.components.metrics"),),
    #: Releases whose metrics module we reproduced and tested (v0.2.2 .. 0.3.x).  A source checkout
    #: reports "0.0.0+unknown" (read as unknown): the structural checks decide.
    versions=VersionRange((0, 2), (0, 4), unknown="allow"), version_of=lambda module: torchtitan_version())
INTEGRATIONS = (TORCHTITAN,)



def torchtitan_version():
    """The installed version; ``None`` when unknown (torchtitan says ``"0.0.0+unknown"`` then)."""
    pkg = sys.modules.get("torchtitan")
    text = getattr(pkg, "__version__", None) or dist_version(FRAMEWORK)
    return None if not text or str(text).startswith("0.0.0") else str(text)


def _dist_rank():
    from_dist = dist_rank_world()
    if from_dist is not None:
        return from_dist
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def _metrics_config(processor):
    config = getattr(processor, "config", None)  # 0.3.0: MetricsProcessor.Config
    if config is not None and hasattr(config, "log_freq"):
        return config
    job = getattr(processor, "job_config", None)  # v0.2.2: JobConfig.metrics
    return getattr(job, "metrics", None)


def _pp_schedule(processor):
    job = getattr(processor, "job_config", None)
    schedule = getattr(getattr(job, "parallelism", None), "pipeline_parallel_schedule", None)
    if schedule is None:
        try:
            schedule = TORCHTITAN.state.pp_schedules.get(processor)
        except TypeError:
            schedule = None
    return schedule or "1F1B"


def metrics_rank(processor, world_size):
    """The rank TorchTitan logs metrics from (its ``_get_metrics_rank``, both releases)."""
    dims = getattr(processor, "parallel_dims", None)
    if dims is None or not getattr(dims, "pp_enabled", False):
        return 0
    if _pp_schedule(processor) == "ZBVZeroBubble":
        return 0
    world = getattr(dims, "world_size", world_size) or world_size
    pp = getattr(dims, "pp", 1) or 1
    return (world // pp) * (pp - 1)


def _has_wandb(logger, wandb_cls, depth=0):
    if logger is None or depth > 4:
        return False
    if wandb_cls is not None and isinstance(logger, wandb_cls):
        return True
    children = getattr(logger, "_loggers", None) or ()
    return any(_has_wandb(child, wandb_cls, depth + 1) for child in children)


def _train_fallback(values):
    metrics = {"loss_metrics/global_avg_loss": values.get("global_avg_loss"),
               "loss_metrics/global_max_loss": values.get("global_max_loss"),
               "grad_norm": values.get("grad_norm")}
    metrics.update(values.get("extra_metrics") or {})
    return metrics


def _validation_fallback(values):
    # log_validation(loss, step, extra_metrics=None) (0.3.0, metrics.py) merges extra_metrics
    # into what it logs, as log() does.
    metrics = {"validation_metrics/loss": values.get("loss")}
    metrics.update(values.get("extra_metrics") or {})
    return metrics


class _Capturing:
    """Around the original ``log``: the capture flag is down again whatever happens."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        TORCHTITAN.state.local.active = False
        return False


def _make_processor_log(module, signature, fallback=_train_fallback, where="MetricsProcessor.log"):
    recorder = get_recorder()

    def before(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        values = bound.arguments
        step = int(values["step"])
        rank, world = _dist_rank()
        config = _metrics_config(self)
        all_ranks = bool(getattr(config, "save_for_all_ranks", False))
        wandb_on = _has_wandb(getattr(self, "logger", None), getattr(module, "WandBLogger", None)) \
            and raw_wandb_active()
        logging_rank = metrics_rank(self, world)
        if not TORCHTITAN.state.claimed:
            TORCHTITAN.state.claimed = True
            recorder.claim(NAME, "base", version=torchtitan_version(),
                           indicators=("hook:torchtitan.components.metrics.MetricsProcessor.log",),
                           rank=rank, world_size=world, logging_rank=logging_rank,
                           step_source="step", wandb_logger="on" if wandb_on else "off")
        if not wandb_on and (all_ranks or rank == logging_rank):
            TORCHTITAN.state.local.captured = None
            TORCHTITAN.state.local.active = True
            return step, rank, values
        return None

    def after(plan, *args, **kwargs):
        step, rank, values = plan
        metrics = TORCHTITAN.state.local.captured
        TORCHTITAN.state.local.captured = None
        if metrics is None:
            # A logger class we did not wrap: report what the arguments say.
            metrics = {k: v for k, v in fallback(values).items() if v is not None}
        if metrics:
            recorder.record(metrics, step, source=NAME, rank=rank)

    # TorchTitan's own errors propagate; ours are counted after its call.
    return patching.around("torchtitan." + where, before, after, during=_Capturing)


def _capture(metrics):
    if getattr(TORCHTITAN.state.local, "active", False) and getattr(TORCHTITAN.state.local, "captured", None) is None \
            and isinstance(metrics, dict):
        TORCHTITAN.state.local.captured = dict(metrics)  # the first (outermost) logger sees the whole dict


def _make_logger_log(original):
    def log(self, metrics, step, *args, **kwargs):
        patching.call_ours("torchtitan logger.log", _capture, metrics)
        return original(self, metrics, step, *args, **kwargs)
    return log


def _remember_schedule(processor, *args, **kwargs):
    schedule = kwargs.get("pp_schedule")
    if schedule is not None:
        TORCHTITAN.state.pp_schedules[processor] = schedule


_make_init = patching.then("torchtitan.MetricsProcessor.__init__", _remember_schedule)


def setup(module):
    """``torchtitan.components.metrics`` was imported (the registry's gate passed)."""
    import inspect

    processor = getattr(module, "MetricsProcessor", None)
    if processor is None or "log" not in vars(processor):
        raise NotEnabled("no MetricsProcessor.log")
    signature = inspect.signature(vars(processor)["log"])
    if "step" not in signature.parameters:
        raise NotEnabled("MetricsProcessor.log has no step parameter")
    base_logger = getattr(module, "BaseLogger", None)
    if base_logger is not None:
        for value in list(vars(module).values()):
            if isinstance(value, type) and issubclass(value, base_logger) and "log" in vars(value):
                patching.patch(value, "log", _make_logger_log)
    patching.patch(processor, "__init__", _make_init)
    wrapper = patching.patch(processor, "log", _make_processor_log(module, signature))
    validation = vars(processor).get("log_validation")
    if validation is not None:
        val_signature = inspect.signature(validation)
        if "step" in val_signature.parameters:
            patching.patch(processor, "log_validation", _make_processor_log(
                module, val_signature, _validation_fallback, "MetricsProcessor.log_validation"))
    get_logger().debug("TorchTitan hook installed (MetricsProcessor.log%s)", signature)
    return wrapper

