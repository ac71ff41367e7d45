"""DeepSpeed adapter: a Lens ``Monitor`` in DeepSpeed's own monitor fan-out.

DeepSpeed's extension point for training metrics is its monitor abstraction
(``deepspeed.monitor.monitor.Monitor``): every ``DeepSpeedEngine`` builds one
``MonitorMaster`` from the ``tensorboard`` / ``wandb`` / ``csv_monitor`` / ``comet``
config sections and hands it ``(label, value, samples)`` events.  When the import
watcher sees ``deepspeed.monitor.monitor`` we patch, at class level:

- ``MonitorMaster.__init__`` (runs on **every** rank, once per engine): claim
  ``deepspeed`` as the base framework, exactly, with its version and ZeRO stage;
  on rank 0 also build a :class:`LensDeepSpeedMonitor` next to DeepSpeed's own.
- ``MonitorMaster.write_events``: after DeepSpeed's fan-out, the same event list
  goes to our monitor.
- ``DeepSpeedConfig.__init__``: remembers which ZeRO stage belongs to which
  ``monitor_config`` (the engine passes exactly that object to ``MonitorMaster``).

No double counting: when DeepSpeed's ``WandbMonitor`` is enabled it logs each event
with ``wandb.log({label: value}, step=samples)``, and the raw wandb patch mirrors
that W&B stream (source ``wandb``); our monitor then stays silent.  Otherwise (or
when the wandb integration is switched off) our monitor reports the events itself
(source ``deepspeed``, step = samples).

We never import DeepSpeed: the Monitor subclass is created from the class the
user's import already loaded.
"""

import sys

from ..core import patching
from ..core.integration import BASE, Framework, Hint, Integration, NotEnabled, VersionRange, Watch
from ..core.log import get_logger
from ..core.recorder import get_recorder

NAME = "deepspeed"
SOURCE = "deepspeed"
FRAMEWORK = Framework(NAME, BASE, ("deepspeed",), (
    Hint("module", "deepspeed.runtime.engine", 0.6),
    Hint("env", "ACCELERATE_USE_DEEPSPEED", 0.5),
    Hint("env", "DEEPSPEED_CONFIG", 0.4),
    Hint("wandb_config", "zero_optimization", 0.5),
))


class _State:
    """What the adapter remembers per process (``DEEPSPEED.state``)."""

    def __init__(self):
        self.stage_by_config = {}  # id(monitor_config) -> (monitor_config, zero stage); bounded
        self.claimed = set()       # ZeRO stages claimed (engines may be many: RLHF)
        self.monitor_class = None  # LensDeepSpeedMonitor, built from the imported Monitor


DEEPSPEED = Integration(
    name=NAME, module=__name__, state=_State(), frameworks=(FRAMEWORK,),
    watches=(Watch("deepspeed.monitor.monitor"),),
    # The range the project supports (pyproject: deepspeed>=0.14); CI here tests 0.19.8.  We rely
    # only on Monitor, MonitorMaster(__init__, write_events, wandb_monitor) and DeepSpeedConfig.
    # A pip-installed DeepSpeed always has a version: an unknown one is refused.
    versions=VersionRange((0, 14, 0), (0, 20, 0)), version_of=lambda module: _installed_version(),
    exports=("LensDeepSpeedMonitor",))
INTEGRATIONS = (DEEPSPEED,)

_LENS_ATTR = "_primus_lens_monitor"
_STAGE_MEMORY = 16


def _installed_version():
    # Metadata only: ``deepspeed/__init__`` is still executing when our hook runs.
    from ..core.detection import dist_version

    return dist_version(FRAMEWORK)


def setup(module):
    """``deepspeed.monitor.monitor`` was imported (the registry's gate passed)."""
    version = _installed_version()
    master = getattr(module, "MonitorMaster", None)
    base = getattr(module, "Monitor", None)
    if master is None or base is None:
        raise NotEnabled(f"deepspeed {version} has no MonitorMaster/Monitor")
    recorder = get_recorder()
    _patch_config_class()
    patching.patch(master, "__init__", _make_init(recorder, module, version))
    patching.patch(master, "write_events", _make_write_events())
    get_logger().debug("DeepSpeed adapter installed (deepspeed %s, MonitorMaster patched)", version)
    return master


def _patch_config_class():
    """Pair each parsed config's ``monitor_config`` with its ZeRO stage (if the class is loaded)."""
    config_module = sys.modules.get("deepspeed.runtime.config")
    config_class = getattr(config_module, "DeepSpeedConfig", None) if config_module is not None else None
    if config_class is None or patching.is_patched(config_class, "__init__"):
        return

    def remember(self, *args, **kwargs):
        monitor_config = getattr(self, "monitor_config", None)
        stage = getattr(self, "zero_optimization_stage", None)
        if monitor_config is not None and stage is not None:
            if len(DEEPSPEED.state.stage_by_config) >= _STAGE_MEMORY:
                DEEPSPEED.state.stage_by_config.pop(next(iter(DEEPSPEED.state.stage_by_config)))
            # Keeping the object alive keeps its id() unique while we remember it.
            DEEPSPEED.state.stage_by_config[id(monitor_config)] = (monitor_config, int(stage))

    patching.patch_after(config_class, "__init__", "deepspeed DeepSpeedConfig", remember)


def _zero_stage(monitor_config):
    entry = DEEPSPEED.state.stage_by_config.get(id(monitor_config))
    if entry is not None and entry[0] is monitor_config:
        return entry[1]
    return None


def _make_init(recorder, module, version):
    def report(master, monitor_config, *args, **kwargs):
        _after_master_init(recorder, module, version, master, monitor_config)
    return patching.then("deepspeed MonitorMaster.__init__", report)


def _after_master_init(recorder, module, version, master, monitor_config):
    # The original just asked deepspeed.comm for the rank, so this cannot initialise anything.
    rank = int(module.dist.get_rank())
    stage = _zero_stage(monitor_config)
    _patch_config_class()  # no-op when done; else the next engine of this process gets its stage
    # MonitorMaster only builds backends on rank 0; the other ranks still ran a DeepSpeed
    # engine, so they claim too.  Once per (stage) per process: engines may be many (RLHF).
    key = stage
    if key not in DEEPSPEED.state.claimed:
        DEEPSPEED.state.claimed.add(key)
        extra = {"rank": rank, "step_source": "global_samples"}
        if stage is not None:
            extra["zero_stage"] = stage
        recorder.claim(NAME, "base", version=version, method="exact", confidence=1.0,
                       indicators=("deepspeed.monitor.monitor.MonitorMaster",), **extra)
    if rank == 0:
        wandb_monitor = getattr(master, "wandb_monitor", None)
        wandb_owned = (wandb_monitor is not None and bool(getattr(wandb_monitor, "enabled", False))
                       and _wandb_stream_mirrored())
        cls = monitor_class(module)
        master.__dict__[_LENS_ATTR] = cls(monitor_config, wandb_owned=wandb_owned)


def _wandb_stream_mirrored():
    """True when the raw wandb patch is active (WandbMonitor imported wandb in its __init__)."""
    wandb_run = sys.modules.get("wandb.sdk.wandb_run")
    run_class = getattr(wandb_run, "Run", None) if wandb_run is not None else None
    return run_class is not None and patching.is_patched(run_class, "_log")


def _write_to_lens(master, event_list, *args, **kwargs):
    lens = master.__dict__.get(_LENS_ATTR)
    if lens is not None:
        lens.write_events(event_list)


def _make_write_events():
    # After DeepSpeed's own fan-out, the same events go to our monitor (rank 0 only has one).
    return patching.then("deepspeed Monitor.write_events", _write_to_lens)


def monitor_class(module=None):
    """``LensDeepSpeedMonitor``: a real ``deepspeed.monitor.monitor.Monitor`` subclass.

    Created on first use from the ``Monitor`` class the program already imported
    (pass the module, or it is taken from ``sys.modules``; DeepSpeed must be imported).
    """
    if DEEPSPEED.state.monitor_class is not None:
        return DEEPSPEED.state.monitor_class
    if module is None:
        module = sys.modules.get("deepspeed.monitor.monitor")
        if module is None:
            raise RuntimeError("deepspeed is not imported; import deepspeed first")

    class LensDeepSpeedMonitor(module.Monitor):
        """Sends DeepSpeed monitor events to Lens (step = samples, as DeepSpeed logs them).

        ``wandb_owned=True`` (DeepSpeed's WandbMonitor is on): the W&B stream already
        carries these events to Lens, so this monitor reports nothing.
        """

        def __init__(self, monitor_config, wandb_owned=False):
            super().__init__(monitor_config)
            self.enabled = True
            self.wandb_owned = wandb_owned
            self._record = get_recorder().record

        def write_events(self, event_list):
            if self.wandb_owned:
                return
            by_step = {}
            for event in event_list:
                label, value, step = event[0], event[1], event[2]
                by_step.setdefault(step, {})[label] = value
            record = self._record
            for step, metrics in by_step.items():
                record(metrics, step=int(step), source=SOURCE)

    DEEPSPEED.state.monitor_class = LensDeepSpeedMonitor
    return DEEPSPEED.state.monitor_class


def __getattr__(name):
    if name == "LensDeepSpeedMonitor":
        return monitor_class()
    raise AttributeError(name)

