"""What detection works with: evidence, the snapshot heuristics may look at, installed versions.

Nothing here imports a framework: versions come from distribution metadata.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ..integration import BASE, WRAPPER, Framework

SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "PASSWD", "AUTH")

__all__ = ["BASE", "WRAPPER", "DetectionContext", "Evidence", "dist_version", "is_secret"]


@dataclass(frozen=True)
class Evidence:
    """One finding: a framework at a layer, how it was found and how sure we are."""

    name: str
    layer: str
    version: Optional[str] = None
    method: str = "heuristic"
    confidence: float = 0.5
    indicators: Tuple[str, ...] = ()
    extra: Dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class DetectionContext:
    """What heuristic detectors may look at (a snapshot; nothing is imported)."""

    modules: frozenset
    environ: Mapping[str, str]
    wandb_config: Mapping[str, Any]


def is_secret(name: str) -> bool:
    upper = str(name).upper()
    return any(marker in upper for marker in SECRET_MARKERS)


class _VersionCache(dict):
    """framework name -> installed version: process-wide, metadata does not change under us."""


_versions = _VersionCache()


def dist_version(framework: Union[str, Framework]) -> Optional[str]:
    """Installed version of a framework's distribution (cached; metadata only, no import).

    ``framework``: a :class:`Framework` (its distributions), or a registered framework's name.
    """
    if isinstance(framework, Framework):
        name, distributions = framework.name, framework.distributions
    else:
        name = framework
        if name in _versions:
            return _versions[name]
        from .heuristics import frameworks

        known = frameworks().get(name)
        distributions = known.distributions if known is not None else ()
    if name in _versions:
        return _versions[name]
    from importlib import metadata

    version = None
    for dist in distributions:
        try:
            version = metadata.version(dist)
            break
        except Exception:
            continue
    _versions[name] = version
    return version
