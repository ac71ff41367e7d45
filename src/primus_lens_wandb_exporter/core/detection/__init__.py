"""Framework detection (plugin API path: ``core.detection.Evidence`` / ``DetectionContext``).

- ``evidence.py``: Evidence, DetectionContext, is_secret, dist_version;
- ``heuristics.py``: the generic detector over every integration's declared hints;
- ``payload.py``: Detector and build_payload (claims first, heuristics for the gaps).
"""

from ..integration import BASE, WRAPPER
from .evidence import DetectionContext, Evidence, dist_version, is_secret
from .payload import Detector, build_payload

__all__ = ["BASE", "WRAPPER", "DetectionContext", "Detector", "Evidence", "build_payload", "dist_version",
           "is_secret"]
