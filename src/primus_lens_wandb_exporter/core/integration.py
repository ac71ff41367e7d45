"""What an integration is: one object per framework adapter holding all of its facts.

An integration module (built-in under ``integrations/`` or a third party's) declares
``INTEGRATIONS = (Integration(...), ...)`` at its top: the distributions that carry
the framework's version, the modules whose import triggers its ``setup``, the range of
versions it was tested on, and the heuristic hints detection may use when no adapter
claims the run.  The registry (``core/registry.py``) reads these declarations; nothing
else in the package lists framework facts.

Standard library only: integration modules import this at their own import time.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple

WRAPPER, BASE = "wrapper", "base"


class NotEnabled(Exception):
    """The integration did not enable, because ``str(exc)``: a debug line, not an error.

    ``setup(module)`` raises it when the framework lacks what the adapter hooks (a release
    without ``MetricsProcessor.log`` ...); the version gate raises it outside the range.
    """


class VersionDeclined(NotEnabled):
    """The installed release is outside the range the adapter was checked against: unlike a
    missing hook this is something the user can act on, so it is one warning, not a debug line."""


def version_tuple(text, width: int = 3) -> Tuple[int, ...]:
    """``"2.6.6+cu121"`` -> ``(2, 6, 6)``: the leading digits of each dotted part."""
    out = []
    for part in str(text).split("+")[0].split(".")[:width]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        out.append(int(digits) if digits else 0)
    while len(out) < width:
        out.append(0)
    return tuple(out)


def _dotted(parts) -> str:
    return ".".join(map(str, parts))


@dataclass(frozen=True)
class VersionRange:
    """THE version gate: ``low <= version < high`` (``high`` exclusive, ``None`` = no bound).

    Versions are compared on ``max(len(low), len(high))`` dotted parts, so ``(0, 15)`` ..
    ``(0, 21)`` admits ``0.20.7``.  ``unknown`` is what an unknown version (``None`` or
    empty: a source checkout without metadata) gets: ``"refuse"`` (pip-installed
    frameworks always carry one) or ``"allow"`` (the adapter's structural checks decide).
    """

    low: Tuple[int, ...]
    high: Optional[Tuple[int, ...]] = None
    unknown: str = "refuse"

    def __post_init__(self):
        if self.unknown not in ("refuse", "allow"):
            raise ValueError(f"unknown= must be 'refuse' or 'allow', not {self.unknown!r}")

    def allows(self, version: Optional[str]) -> bool:
        if version is None or str(version) == "":
            return self.unknown == "allow"
        width = max(len(self.low), len(self.high or ()))
        parsed = version_tuple(version, width)
        return self.low <= parsed and (self.high is None or parsed < self.high)

    def describe(self) -> str:
        return f"[{_dotted(self.low)}, {_dotted(self.high) if self.high else '...'})"

    def check(self, version: Optional[str], what: str) -> None:
        """Raise :class:`NotEnabled` when ``version`` is outside the range."""
        if not self.allows(version):
            raise VersionDeclined(f"{what} {version} is outside the tested range {self.describe()}")


@dataclass(frozen=True)
class Hint:
    """Heuristic evidence for a framework (used only when no adapter claims exactly).

    ``kind``: ``"module"`` (a loaded module name, exactly), ``"env"`` (a non-empty
    environment variable) or ``"wandb_config"`` (a key of the run's W&B config).
    ``when``: an extra predicate on the loaded module names (AMD Primus vs PyPI's primus).
    """

    kind: str
    key: str
    confidence: float
    when: Optional[Callable[[frozenset], bool]] = field(default=None, compare=False)


@dataclass(frozen=True)
class Framework:
    """A detection name: a framework at a layer, its distributions and its hints."""

    name: str
    layer: str
    distributions: Tuple[str, ...]
    hints: Tuple[Hint, ...] = ()


@dataclass(frozen=True)
class Watch:
    """An imported module that triggers ``setup`` (a function of the integration module)."""

    module: str
    setup: str = "setup"


@dataclass(frozen=True)
class Integration:
    """All facts of one framework adapter.

    ``name`` is its ``PRIMUS_LENS_DISABLED_INTEGRATIONS`` name; ``family`` a second name
    that also disables it (``megatron`` disables ``megatron_bridge``).  ``version_of``
    reads the version from the watched module (default: the first framework's
    distribution metadata).  ``exports``: public names the package serves lazily
    (``primus_lens_wandb_exporter.LensLogger``).  ``state`` is the integration's one
    mutable per-process object (``None`` if it keeps none); ``uninstall()`` resets it.
    """

    name: str
    module: str
    frameworks: Tuple[Framework, ...] = ()
    watches: Tuple[Watch, ...] = ()
    versions: Optional[VersionRange] = None
    version_of: Optional[Callable[[Any], Optional[str]]] = field(default=None, compare=False)
    family: Optional[str] = None
    exports: Tuple[str, ...] = ()
    state: Any = field(default=None, compare=False)
    what: Optional[str] = None  # the name in "<what> 1.2 is outside the tested range" (default: name)

    def version(self, watched=None) -> Optional[str]:
        if self.version_of is not None:
            return self.version_of(watched)
        if self.frameworks:
            from .detection.evidence import dist_version

            return dist_version(self.frameworks[0].name)
        return None

    def check_version(self, watched=None) -> Optional[str]:
        """The version, or :class:`NotEnabled` when it is outside ``versions``."""
        version = self.version(watched)
        if self.versions is not None:
            self.versions.check(version, self.what or self.name)
        return version
