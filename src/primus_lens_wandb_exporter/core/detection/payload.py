"""The detection payload: exact claims from adapters, heuristics only for the gaps.

An adapter called by a framework knows the framework: it claims it through
``Recorder.claim`` with ``method="exact"``.  Heuristics (``heuristics.py`` and third-party
``lens_detect_frameworks`` plugins) never import a framework, never initialise a device and
never start a process, and run on the Recorder's worker thread.  Their findings say
``method="heuristic"``.  :func:`build_payload` chooses one wrapper and one base.
"""

import os
import platform
import socket
import sys
import time
from typing import Any, Dict, List

from ...redact import redact_url_credentials
from ..integration import BASE, WRAPPER
from .evidence import DetectionContext, Evidence, dist_version, is_secret


class Detector:
    """Builds the detection payload from claims and heuristics."""

    def __init__(self, recorder):
        self.recorder = recorder

    def build(self, claims: List[Evidence], run_states) -> Dict[str, Any]:
        rec = self.recorder
        environ = dict(os.environ)
        config: Dict[str, Any] = {}
        wandb_info: Dict[str, Any] = {}
        for state in run_states:
            config.update(state.config)
            wandb_info = {"project": state.info.get("project"), "name": state.info.get("name"),
                          "id": state.run_id, "mode": state.info.get("mode")}
        context = DetectionContext(modules=frozenset(sys.modules), environ=environ, wandb_config=config)
        heuristic: List[Evidence] = []
        if rec._pm is not None:
            from ..registry import call_safely

            for result in call_safely(rec._pm.hook.lens_detect_frameworks, context=context):
                heuristic.extend(e for e in result if isinstance(e, Evidence))
        return build_payload(claims, heuristic, rec.identity, environ, wandb_info, context.modules)


def _choose(claims, heuristic, layer):
    exact = [e for e in claims if e.layer == layer]
    if exact:
        if layer == BASE:
            # A specific base (deepspeed, megatron ...) beats the generic pytorch/transformers claim.
            specific = [e for e in exact if e.name not in ("pytorch", "transformers")]
            if specific:
                exact = specific
        # The latest claim of the highest confidence wins (a wrapper adapter may refine its base).
        return max(reversed(exact), key=lambda e: e.confidence)
    guesses = [e for e in heuristic if e.layer == layer and e.name not in {c.name for c in claims}]
    if not guesses:
        return None
    if layer == BASE:
        # Prefer a specific base over the generic "pytorch"/"transformers" at equal footing.
        specific = [e for e in guesses if e.name not in ("pytorch", "transformers")]
        if specific:
            guesses = specific
    return max(guesses, key=lambda e: e.confidence)


def build_payload(claims, heuristic, identity, environ, wandb_info, modules) -> Dict[str, Any]:
    wrapper = _choose(claims, heuristic, WRAPPER)
    base = _choose(claims, heuristic, BASE)
    chosen = [e for e in (wrapper, base) if e is not None]
    # With nothing found the payload still says "heuristic" (confidence 0): nothing was claimed.
    method = "exact" if chosen and all(e.method == "exact" for e in chosen) else "heuristic"
    confidence = min((e.confidence for e in chosen), default=0.0)
    everything = list(claims) + [h for h in heuristic if h.name not in {c.name for c in claims}]

    # Per framework, the evidence shown is the claim that wins (highest confidence, latest).
    best = {}
    for e in reversed(everything):
        key = (e.layer, e.name)
        if key not in best or e.confidence > best[key].confidence:
            best[key] = e

    def layer_dict(layer):
        out = {}
        for e in everything:
            e = best[(e.layer, e.name)]
            if e.layer == layer and e.name not in out:
                out[e.name] = {"version": e.version, "method": e.method, "confidence": e.confidence,
                               "indicators": list(e.indicators), **_safe_extra(e.extra)}
        return out

    torch_mod = sys.modules.get("torch")
    pytorch = {"available": torch_mod is not None}
    if torch_mod is not None:
        pytorch["version"] = getattr(torch_mod, "__version__", None)
        pytorch["cuda_version"] = getattr(getattr(torch_mod, "version", None), "cuda", None)
        pytorch["hip_version"] = getattr(getattr(torch_mod, "version", None), "hip", None)
    env_view = {k: v for k, v in environ.items()
                if k.startswith(("PRIMUS", "WORKLOAD", "POD_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK",
                                 "MASTER_", "WANDB_", "CUDA_VISIBLE", "HIP_VISIBLE", "ROCR_VISIBLE", "SLURM_",
                                 "OMPI_COMM_WORLD", "ACCELERATE_", "DEEPSPEED", "MEGATRON"))
                and not is_secret(k)}
    # Credentials go out of every URL in it (PRIMUS_LENS_API_BASE_URL=http://u:pw@..., database
    # URLs under any variable name, wandb's base_url): is_secret only knows names.
    return redact_url_credentials({
        "source": "wandb",
        "type": "framework_detection_raw",
        "version": "1.0",
        "workload_uid": identity.workload_uid,
        "pod_uid": identity.pod_uid,
        "pod_name": identity.pod_name,
        "namespace": identity.namespace,
        "run_id": wandb_info.get("id"),
        "timestamp": time.time(),
        "evidence": {
            "wandb": {k: v for k, v in wandb_info.items() if v is not None},
            "environment": env_view,
            "pytorch": pytorch,
            "wrapper_frameworks": layer_dict(WRAPPER),
            "base_frameworks": layer_dict(BASE),
            "system": {"python_version": platform.python_version(), "platform": platform.platform(),
                       "hostname": socket.gethostname(), "pid": os.getpid()},
            "hardware": {"cpu_count": os.cpu_count()},
            "software": {name: dist_version(name) for name in sorted({e.name for e in everything})},
        },
        "hints": {
            "wrapper_frameworks": [e.name for e in everything if e.layer == WRAPPER],
            "base_frameworks": [e.name for e in everything if e.layer == BASE],
            "possible_frameworks": sorted({e.name for e in everything}),
            "confidence": confidence,
            "primary_indicators": [i for e in chosen for i in e.indicators][:20],
            "framework_layers": {e.name: e.layer for e in everything},
        },
        "detection": {
            "wrapper": wrapper.name if wrapper else None,
            "base": base.name if base else None,
            "method": method,
            "confidence": confidence,
            "layers": {e.layer: {"name": e.name, "method": e.method, "version": e.version} for e in chosen},
        },
    })


def _safe_extra(extra):
    out = {}
    for key, value in (extra or {}).items():
        if is_secret(key):
            continue
        out[str(key)] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
    return out
