"""JAX adapters: MaxText's ``MetricLogger.write_metrics`` and CLU's ``MetricWriter.write_scalars``.

MaxText: ``MetricLogger.write_metrics(metrics, step, metric_type="train")`` (older
releases: ``is_training=True``; bound by name) receives ``{"scalar": {...}}`` on every
host and writes W&B (``wandb.log(flat, step=step)``) only on ``jax.process_index() == 0``
when ``config.enable_wandb``.  Then the W&B stream is the source and we only claim;
otherwise we report ``metrics["scalar"]`` (and the flattened ``"scalars"``) from process
0 under ``source="maxtext"``, MaxText's own names (``learning/loss`` ...), ``step=step``.

CLU: writers nest (``AsyncMultiWriter`` -> ``AsyncWriter`` -> ``LoggingWriter`` /
``SummaryWriter``, the inner ones on a thread pool); we report the scalars once, at the
outermost writer the program calls, from process 0 (CLU's idiom:
``create_default_writer(just_logging=jax.process_index() > 0)``), ``source="clu"``.
A writer class of the program's own (not CLU's) that logs the scalars to W&B is left to the
W&B stream (we only claim): while a W&B run is active, the wandb ``log`` calls its
``write_scalars`` makes on the calling thread are counted (``patching.watch_raw_logs``), and
its scalars are reported only when it made none.  Where such a writer sits under CLU's
async writers (a thread pool, so its calls cannot be watched), it is assumed to log to W&B.

The rank is ``jax.process_index()``, read only when the program imported ``jax``.
"""

import sys
import threading
import weakref

from ..core import patching
from ..core.detection import dist_version
from ..core.integration import BASE, Framework, Hint, Integration, NotEnabled, VersionRange, Watch
from ..core.log import get_logger
from ..core.recorder import get_recorder
from .wandb import raw_wandb_active

NAME = "jax"
MAXTEXT_FRAMEWORK = Framework("maxtext", BASE, ("maxtext",), (Hint("module", "MaxText", 0.6),))
JAX_FRAMEWORK = Framework("jax", BASE, ("jax",), (Hint("module", "jax", 0.5),))


class _State:
    """What the adapters remember per process (``MAXTEXT.state``, ``CLU.state``)."""

    def __init__(self):
        self.claimed = False
        self.local = threading.local()    # CLU: nesting depth of write_scalars on this thread
        self.inner = weakref.WeakSet()    # CLU: writers another writer delegates to (reported at the outer one)


MAXTEXT = Integration(
    name="maxtext", family=NAME, module=__name__, state=_State(), frameworks=(MAXTEXT_FRAMEWORK,),
    # MaxText moved its logger twice (2026-01): every location is watched.
    watches=(Watch("MaxText.metric_logger", "setup_maxtext"), Watch("MaxText.common.metric_logger", "setup_maxtext"),
             Watch("maxtext.common.metric_logger", "setup_maxtext")))
CLU = Integration(
    name="clu", family=NAME, module=__name__, state=_State(), frameworks=(JAX_FRAMEWORK,),
    watches=(Watch("clu.metric_writers", "setup_clu"),),
    #: CLU releases whose metric_writers we reproduced (v0.0.9 .. v0.0.12 / main 2026-07); unknown: allowed.
    versions=VersionRange((0, 0, 9), (0, 0, 100), unknown="allow"), version_of=lambda module: dist_version_clu())
INTEGRATIONS = (MAXTEXT, CLU)


def process_index():
    """``jax.process_index()`` if the program imported jax, else ``None`` (never imports jax)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    try:
        return int(jax.process_index())
    except Exception:  # a read of the user's jax (not initialised yet ...): rank unknown, not our error
        return None


def _jax_version():
    jax = sys.modules.get("jax")
    return getattr(jax, "__version__", None) if jax is not None else None


def _scalars(metrics):
    out = {}
    for key, value in (metrics.get("scalar") or {}).items():
        out[str(key)] = value
    for key, group in (metrics.get("scalars") or {}).items():
        if isinstance(group, dict):
            for sub, value in group.items():
                out[f"{key}/{sub}"] = value
    return out


# -------------------------------------------------------------------------- MaxText



def _make_write_metrics(signature, module_name):
    recorder = get_recorder()
    indicator = f"hook:{module_name}.MetricLogger.write_metrics"

    def before(self, *args, **kwargs):
        values = signature.bind(self, *args, **kwargs).arguments
        metrics = values.get("metrics")
        index = process_index()
        config = getattr(self, "config", None)
        wandb_on = bool(getattr(config, "enable_wandb", False)) and raw_wandb_active()
        if not MAXTEXT.state.claimed:
            MAXTEXT.state.claimed = True
            recorder.claim("maxtext", "base", version=dist_version(MAXTEXT_FRAMEWORK),
                           indicators=(indicator,),
                           rank=index if index is not None else -1, step_source="step",
                           wandb_logger="on" if wandb_on else "off", jax_version=_jax_version())
        # running_eval snapshots are partial eval averages keyed by the eval batch
        # index, not a training step: Lens gets the final eval metrics instead.
        running = values.get("metric_type") == "running_eval"
        if metrics and not wandb_on and not running and (index is None or index == 0):
            return _scalars(metrics), int(values["step"]), index
        return None

    def after(plan, *args, **kwargs):
        scalars, step, index = plan
        if scalars:
            recorder.record(scalars, step, source="maxtext", rank=index)

    # MaxText's own errors propagate; ours are counted after its call.
    return patching.around("maxtext.write_metrics", before, after)


def setup_maxtext(module):
    """One of MaxText's ``metric_logger`` modules was imported (the registry's gate passed)."""
    import inspect

    logger_cls = getattr(module, "MetricLogger", None)
    if logger_cls is None or "write_metrics" not in vars(logger_cls):
        raise NotEnabled("no MetricLogger.write_metrics")
    signature = inspect.signature(vars(logger_cls)["write_metrics"])
    if not {"metrics", "step"} <= set(signature.parameters):
        raise NotEnabled("write_metrics has no metrics/step parameters")
    wrapper = patching.patch(logger_cls, "write_metrics", _make_write_metrics(signature, module.__name__))
    get_logger().debug("MaxText hook installed (MetricLogger.write_metrics%s)", signature)
    return wrapper


# ------------------------------------------------------------------------------ CLU



def _children(writer):
    inner = getattr(writer, "_writer", None)
    out = [inner] if inner is not None else []
    out.extend(getattr(writer, "_writers", None) or ())
    return out


def _mark_inner(writer, depth=0):
    """Every writer below ``writer`` (also those called later on a thread pool) is inner."""
    if depth > 6:
        return
    for child in _children(writer):
        if child not in CLU.state.inner:
            CLU.state.inner.add(child)
            _mark_inner(child, depth + 1)


def _foreign(writer, depth=0):
    """A writer class outside CLU somewhere in the tree (a user's own, e.g. to W&B)."""
    if depth > 6:
        return False
    if not (type(writer).__module__ or "").startswith("clu."):
        return True
    return any(_foreign(child, depth + 1) for child in _children(writer))


def _wandb_run_active():
    wandb = sys.modules.get("wandb")
    return wandb is not None and getattr(wandb, "run", None) is not None and raw_wandb_active()


def _async_tree(writer, depth=0):
    """CLU's async writers somewhere in the tree: the inner writers run on a thread pool."""
    if depth > 6:
        return False
    if (type(writer).__module__ or "").startswith("clu.metric_writers.async_writer"):
        return True
    return any(_async_tree(child, depth + 1) for child in _children(writer))


class _Nested:
    """Around the original ``write_scalars``: inner writers it calls on this thread are not
    outermost; when ``_clu_before`` asked (``watch_next``), the wandb log calls it makes here
    are counted, and ``_clu_after`` reads whether there were any (``logged_to_wandb``)."""

    def __enter__(self):
        local = CLU.state.local
        local.depth = getattr(local, "depth", 0) + 1
        self.watch = None
        if getattr(local, "watch_next", False):
            local.watch_next = False
            self.watch = patching.watch_raw_logs().__enter__()
        return self

    def __exit__(self, *exc):
        local = CLU.state.local
        local.depth -= 1
        if self.watch is not None:
            self.watch.__exit__(*exc)
            local.logged_to_wandb = self.watch.count > 0
        return False


def _clu_before(self, step, scalars, *args, **kwargs):
    if getattr(CLU.state.local, "depth", 0) or self in CLU.state.inner:
        return None
    _mark_inner(self)
    index = process_index()
    if not CLU.state.claimed:
        CLU.state.claimed = True
        get_recorder().claim("jax", "base", version=_jax_version() or dist_version(JAX_FRAMEWORK),
                             indicators=("hook:clu.metric_writers.MetricWriter.write_scalars",),
                             library="clu", clu_version=dist_version_clu(),
                             rank=index if index is not None else -1, step_source="step")
    # A writer of the program's own may log these to W&B itself: watched during its call.
    foreign = _foreign(self) and _wandb_run_active()
    if foreign and _async_tree(self):
        return None  # its calls run on CLU's thread pool, after this one returns: left to W&B
    if (index is None or index == 0) and scalars:
        if foreign:
            CLU.state.local.watch_next = True
        return dict(scalars), int(step), index, foreign
    return None


def _clu_after(plan, *args, **kwargs):
    values, step_value, index, foreign = plan
    if foreign:
        logged, CLU.state.local.logged_to_wandb = getattr(CLU.state.local, "logged_to_wandb", False), False
        if logged:
            return  # the writer logged them to W&B: the W&B stream reports them
    get_recorder().record(values, step_value, source="clu", rank=index)


# CLU's own errors propagate; ours are counted after its call.
_make_write_scalars = patching.around("clu.write_scalars", _clu_before, _clu_after, during=_Nested)


def dist_version_clu():
    from importlib import metadata

    try:
        return metadata.version("clu")
    except Exception:  # no metadata (a source checkout): unknown version
        return None


def _base_writer(package):
    interface = sys.modules.get(package.__name__ + ".interface")
    return getattr(interface, "MetricWriter", None) or getattr(package, "MetricWriter", None)


def _writer_classes(package):
    base = _base_writer(package)
    if base is None:
        return []
    found, queue = [], [base]
    while queue:
        cls = queue.pop()
        if cls in found:
            continue
        found.append(cls)
        queue.extend(cls.__subclasses__())
    return [c for c in found if _is_concrete(c)]


def _is_concrete(cls):
    func = vars(cls).get("write_scalars")
    return func is not None and not getattr(func, "__isabstractmethod__", False)


def _wrap_writer_class(cls):
    if _is_concrete(cls):
        patching.patch(cls, "write_scalars", _make_write_scalars)


def _wrap_future_subclasses(base):
    """Writer classes defined after the import (the user's own) are wrapped as they are defined."""
    if "__init_subclass__" in vars(base):
        return

    def make(_inherited):
        def __init_subclass__(cls, **kwargs):
            super(base, cls).__init_subclass__(**kwargs)
            patching.call_ours("clu writer subclass", _wrap_writer_class, cls)
        return classmethod(__init_subclass__)

    try:
        patching.patch(base, "__init_subclass__", make)
    except (AttributeError, TypeError):  # classmethod objects take no attributes before 3.10
        pass


def setup_clu(module):
    """``clu.metric_writers`` was imported: wrap every writer's ``write_scalars`` (the gate passed)."""
    classes = _writer_classes(module)
    if not classes:
        raise NotEnabled("no MetricWriter implementations found")
    for cls in classes:
        patching.patch(cls, "write_scalars", _make_write_scalars)
    _wrap_future_subclasses(_base_writer(module))
    get_logger().debug("CLU hook installed (%d MetricWriter classes)", len(classes))
    return True

