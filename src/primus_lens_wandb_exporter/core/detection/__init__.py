"""Framework detection (plugin API path: ``core.detection.Evidence`` / ``DetectionContext``).

- ``evidence.py``: Evidence, DetectionContext, is_secret, dist_version;
- ``heuristics.py``: the generic detector over every integration's declared hints;
- ``payload.py``: Detector and build_payload (claims first, heuristics for the gaps).
"""

from ..integration import BASE, WRAPPER
from .evidence import DetectionContext, Evidence, dist_version, is_secret
from .heuristics import frameworks, lens_detect_frameworks
from .payload import Detector, build_payload

__all__ = ["BASE", "WRAPPER", "DetectionContext", "Detector", "Evidence", "build_payload", "dist_version",
           "frameworks", "is_secret", "lens_detect_frameworks"]


def __getattr__(name):
    # Shim for import_wandb.py (package D) until E switches it to frameworks(): name -> (layer, distributions).
    if name == "FRAMEWORKS":
        return {f.name: (f.layer, f.distributions) for f in frameworks().values()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
