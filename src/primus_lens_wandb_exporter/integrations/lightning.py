"""PyTorch Lightning integration (``lightning.pytorch`` and ``pytorch_lightning``).

Zero code: Lightning itself calls our factory in every ``Trainer`` (entry-point groups
``lightning.pytorch.callbacks_factory`` -> :func:`lightning_callbacks_factory` and
``pytorch_lightning.callbacks_factory`` -> :func:`pytorch_lightning_callbacks_factory`).  The returned ``LensCallback``, at
``setup``:

- claims ``lightning`` (wrapper) and the base layer from the strategy
  (DeepSpeed -> ``deepspeed``; FSDP, DDP, single device -> ``pytorch``), exactly;
- when no ``WandbLogger`` feeds W&B (whose stream our raw wandb patch already
  reports, stepped by ``trainer/global_step``), appends a ``LensLogger`` to
  ``trainer.loggers`` so Lightning's own logged metrics reach Lens (data source
  ``lightning``, step = the step Lightning gives its loggers, which is what
  ``WandbLogger`` writes as ``trainer/global_step``; rank zero only, like every
  Lightning logger).

``LensLogger`` is also usable explicitly (``Trainer(logger=[..., LensLogger()])``).
Both classes subclass the ``Logger`` / ``Callback`` of the Lightning namespace in
use; this module imports neither namespace until Lightning calls it or the user
asks for one of its classes.
"""

import importlib
import importlib.util
import sys
import weakref

from ..core import patching
from ..core.integration import WRAPPER, Framework, Hint, Integration, VersionRange
from ..core.log import get_logger
from ..core.recorder import get_recorder
from .wandb import raw_wandb_active

NAME = "lightning"
SOURCE = "lightning"
STEP_SOURCE = "trainer/global_step"
# No import watch: Lightning calls our callbacks factory itself (pyproject entry points
# ``lightning.pytorch.callbacks_factory`` / ``pytorch_lightning.callbacks_factory``).


class _State:
    """The classes built per Lightning namespace (``LIGHTNING.state``)."""

    def __init__(self):
        self.classes = {}  # namespace -> (LensLogger, LensCallback)


LIGHTNING = Integration(
    name=NAME, module=__name__, state=_State(),
    frameworks=(Framework(NAME, WRAPPER, ("lightning", "pytorch-lightning"), (
        Hint("module", "lightning.pytorch.trainer", 0.7),
        Hint("module", "pytorch_lightning.trainer", 0.7),
    )),),
    # Tested: 2.6.6 (tests/integrations/test_lightning.py).  A source checkout without
    # __version__ is taken as current.
    versions=VersionRange((2, 0, 0), (3, 0, 0), unknown="allow"),
    version_of=lambda namespace: namespace_version(namespace), what="Lightning",
    exports=("LensLogger", "LensCallback"))
INTEGRATIONS = (LIGHTNING,)

# namespace -> distribution module that carries __version__
NAMESPACES = {"lightning.pytorch": "lightning", "pytorch_lightning": "pytorch_lightning"}
_GROUPS = {
    "lightning.pytorch.callbacks_factory": "lightning.pytorch",
    "pytorch_lightning.callbacks_factory": "pytorch_lightning",
}

# Strategy class name (anywhere in the MRO) -> (base framework, strategy indicator). First match wins.
_STRATEGIES = (
    ("DeepSpeedStrategy", "deepspeed", "deepspeed"),
    ("XLAFSDPStrategy", "pytorch", "xla_fsdp"),
    ("FSDPStrategy", "pytorch", "fsdp"),
    ("ModelParallelStrategy", "pytorch", "model_parallel"),
    ("DDPStrategy", "pytorch", "ddp"),
    ("XLAStrategy", "pytorch", "xla"),
    ("SingleDeviceXLAStrategy", "pytorch", "xla"),
    ("SingleDeviceStrategy", "pytorch", "single_device"),
    ("ParallelStrategy", "pytorch", "parallel"),
)



def namespace_version(namespace):
    module = sys.modules.get(NAMESPACES.get(namespace, ""))
    return str(getattr(module, "__version__", "") or "") or None


def _namespace_in_use():
    """The Lightning namespace the program imported (``lightning.pytorch`` when both or neither is)."""
    if "pytorch_lightning" in sys.modules and "lightning.pytorch" not in sys.modules:
        return "pytorch_lightning"
    if "lightning.pytorch" in sys.modules or importlib.util.find_spec("lightning") is not None:
        return "lightning.pytorch"
    return "pytorch_lightning"


# --------------------------------------------------------------------------- the mixins


def _is_wandb_logger(logger):
    return any(cls.__name__ == "WandbLogger" for cls in type(logger).__mro__)


def _strategy_info(trainer):
    strategy = getattr(trainer, "strategy", None)
    names = [cls.__name__ for cls in type(strategy).__mro__] if strategy is not None else []
    for cls_name, base, indicator in _STRATEGIES:
        if cls_name in names:
            return base, indicator
    return "pytorch", (type(strategy).__name__ if strategy is not None else "unknown")


def _base_version(base):
    if base == "deepspeed":
        return getattr(sys.modules.get("deepspeed"), "__version__", None)
    return getattr(sys.modules.get("torch"), "__version__", None)


class _LensLoggerMixin:
    """Lightning ``Logger`` that hands Lightning's logged metrics to the Lens Recorder."""

    _lens_namespace = "lightning.pytorch"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lens_trainer = None
        self._lens_muted = False
        self._lens_claimed = False
        self._lens_recorder = get_recorder()

    # Logger API ---------------------------------------------------------------
    @property
    def name(self):
        return "primus_lens"

    @property
    def version(self):
        try:
            return str(self._lens_recorder.identity.workload_uid)
        except Exception:  # a property Lightning reads: never raise into it
            return "0"

    @property
    def experiment(self):
        """The Lens Recorder (what this logger writes to)."""
        return self._lens_recorder

    @patching.guard("lightning LensLogger.log_metrics")
    def log_metrics(self, metrics, step=None):
        if self._lens_muted or not metrics:
            return
        trainer = self._lens_trainer() if self._lens_trainer is not None else None
        rank = getattr(trainer, "global_rank", None) if trainer is not None else None
        if rank is None:
            rank = getattr(_rank_zero_only(self._lens_namespace), "rank", 0) or 0
        if rank != 0:
            return  # like every Lightning logger: rank zero reports
        if not self._lens_claimed:
            self._lens_claimed = True
            if trainer is None:  # used without the callback: we still know the wrapper exactly
                self._lens_recorder.claim(NAME, "wrapper", version=namespace_version(self._lens_namespace),
                                          indicators=("logger:LensLogger",), namespace=self._lens_namespace,
                                          step_source=STEP_SOURCE)
        if step is None and trainer is not None:
            step = getattr(trainer, "global_step", None)
        self._lens_recorder.record(dict(metrics), step, source=SOURCE, rank=rank)

    def log_hyperparams(self, params, *args, **kwargs):
        # Hyperparameters are run metadata, not metrics; W&B users already get them via wandb config.
        return None

    def save(self):
        return None

    def finalize(self, status):
        return None

    # ours ---------------------------------------------------------------------
    def _lens_bind(self, trainer, muted):
        self._lens_trainer = weakref.ref(trainer)
        self._lens_muted = bool(muted)
        self._lens_claimed = True  # the callback claimed with full knowledge


class _LensCallbackMixin:
    """Lightning ``Callback``: claims the framework and attaches a ``LensLogger`` when needed."""

    _lens_namespace = "lightning.pytorch"

    @patching.guard("lightning LensCallback.setup")
    def setup(self, trainer, pl_module, stage=None):
        self._lens_setup(trainer, stage)

    def _lens_setup(self, trainer, stage):
        # Several LensCallbacks (explicit + the factory's): the first one acts.
        first = next((cb for cb in getattr(trainer, "callbacks", ()) if isinstance(cb, _LensCallbackMixin)), self)
        if first is not self:
            return
        recorder = get_recorder()
        namespace = self._lens_namespace
        base, strategy = _strategy_info(trainer)
        rank = int(getattr(trainer, "global_rank", 0) or 0)
        world_size = int(getattr(trainer, "world_size", 1) or 1)
        loggers = list(getattr(trainer, "loggers", ()) or ())
        wandb_logger = any(_is_wandb_logger(lg) for lg in loggers)
        wandb_source = wandb_logger and raw_wandb_active()
        lens_loggers = [lg for lg in loggers if isinstance(lg, _LensLoggerMixin)]
        attached = False
        if not lens_loggers and not wandb_source and loggers:
            # Appended last: loggers[0] (trainer.logger, log_dir, checkpoint dir) stays the user's.
            # With logger=False (no loggers) we add none, so as not to change those.
            logger = _classes_for(namespace)[0]()
            trainer.loggers = loggers + [logger]
            lens_loggers = [logger]
            attached = True
        for lg in lens_loggers:
            lg._lens_bind(trainer, muted=wandb_source)
        if wandb_source:
            metrics_via = "wandb"
        elif lens_loggers:
            metrics_via = "lens_logger"
        else:
            metrics_via = "none"
        common = dict(rank=rank, world_size=world_size, strategy=strategy, step_source=STEP_SOURCE)
        recorder.claim(NAME, "wrapper", version=namespace_version(namespace),
                       indicators=(f"callbacks_factory:{namespace}", f"strategy:{strategy}"),
                       namespace=namespace, metrics_via=metrics_via, stage=str(stage), **common)
        recorder.claim(base, "base", version=_base_version(base),
                       indicators=(f"lightning_strategy:{type(trainer.strategy).__name__}",), **common)
        get_logger().debug("Lightning adapter: %s strategy=%s base=%s rank=%s metrics via %s%s",
                           namespace, strategy, base, rank, metrics_via, " (LensLogger attached)" if attached else "")


# --------------------------------------------------------------------------- classes per namespace


def _rank_zero_only(namespace):
    module = sys.modules.get(namespace + ".utilities.rank_zero") or sys.modules.get(
        "lightning_utilities.core.rank_zero")
    return getattr(module, "rank_zero_only", None)


def _classes_for(namespace):
    """(LensLogger, LensCallback) subclassing ``namespace``'s Logger and Callback (imports it)."""
    classes = LIGHTNING.state.classes.get(namespace)
    if classes is not None:
        return classes
    logger_base = importlib.import_module(namespace + ".loggers.logger").Logger
    callback_base = importlib.import_module(namespace + ".callbacks").Callback
    doc_logger = (_LensLoggerMixin.__doc__ or "") + f" (``{namespace}``)"
    doc_callback = (_LensCallbackMixin.__doc__ or "") + f" (``{namespace}``)"
    logger_cls = type("LensLogger", (_LensLoggerMixin, logger_base),
                      {"__module__": __name__, "__qualname__": "LensLogger", "__doc__": doc_logger,
                       "_lens_namespace": namespace})
    callback_cls = type("LensCallback", (_LensCallbackMixin, callback_base),
                        {"__module__": __name__, "__qualname__": "LensCallback", "__doc__": doc_callback,
                         "_lens_namespace": namespace})
    classes = LIGHTNING.state.classes[namespace] = (logger_cls, callback_cls)
    return classes


def lens_logger_class(namespace=None):
    """The ``LensLogger`` class for ``namespace`` (``"lightning.pytorch"`` or ``"pytorch_lightning"``)."""
    return _classes_for(namespace or _namespace_in_use())[0]


def lens_callback_class(namespace=None):
    """The ``LensCallback`` class for ``namespace`` (``"lightning.pytorch"`` or ``"pytorch_lightning"``)."""
    return _classes_for(namespace or _namespace_in_use())[1]


def __getattr__(name):
    # ``LensLogger`` / ``LensCallback`` resolve to the classes of the namespace the program imported.
    if name == "LensLogger":
        return lens_logger_class()
    if name == "LensCallback":
        return lens_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- entry points


def _callbacks(namespace):
    from ..core.registry import gate

    if not gate(LIGHTNING, namespace):
        return []
    return [_classes_for(namespace)[1]()]


def _factory(namespace):
    # Lightning does not catch: never break Trainer construction.
    return patching.call_ours("lightning callbacks_factory", _callbacks, namespace) or []


def _calling_group():
    # Lightning's loader passes no argument; its frame holds the entry-point group it is loading.
    try:
        frame = sys._getframe(2)
        for _ in range(3):
            if frame is None:
                break
            group = frame.f_locals.get("group")
            if isinstance(group, str) and group in _GROUPS:
                return _GROUPS[group]
            frame = frame.f_back
    except Exception:  # frame inspection is best effort: fall back to the namespace in use
        pass
    return None


def callbacks_factory():
    """Group-agnostic factory (older installs): ``[LensCallback()]`` for the calling namespace."""
    namespace = _calling_group() or _namespace_in_use()
    return _factory(namespace)


def lightning_callbacks_factory():
    """Entry point for ``lightning.pytorch.callbacks_factory``."""
    return _factory("lightning.pytorch")


def pytorch_lightning_callbacks_factory():
    """Entry point for ``pytorch_lightning.callbacks_factory``."""
    return _factory("pytorch_lightning")
