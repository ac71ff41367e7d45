"""The heuristics: one generic detector over every registered integration's declared hints.

Registered as the ``heuristics`` plugin (``lens_detect_frameworks``).  Each
:class:`~primus_lens_wandb_exporter.core.integration.Framework` declares its hints (loaded
modules, environment variables, W&B config keys) next to its adapter; this loop reads them
all, in registry order.  Runs on the Recorder's worker thread; never imports a framework.
"""

from typing import Dict

from ..hookspecs import hookimpl
from ..integration import WRAPPER, BASE, Framework
from .evidence import Evidence, dist_version


def frameworks() -> Dict[str, Framework]:
    """Every registered framework by name (built-ins and third parties), in registry order."""
    from ..registry import integrations

    out: Dict[str, Framework] = {}
    for integration in integrations():
        for framework in integration.frameworks:
            out.setdefault(framework.name, framework)
    return out


@hookimpl
def lens_detect_frameworks(context):
    """Evidence from the declared hints (modules, env vars, wandb config keys)."""
    known = frameworks()
    found: Dict[str, Evidence] = {}

    def add(name, confidence, indicator):
        framework = known[name]
        old = found.get(name)
        indicators = (old.indicators if old else ()) + (indicator,)
        found[name] = Evidence(name=name, layer=framework.layer, version=dist_version(framework),
                               method="heuristic", confidence=max(confidence, old.confidence if old else 0.0),
                               indicators=indicators)

    modules = context.modules
    environ = context.environ
    config = context.wandb_config
    # Evidence order decides equal-confidence ties in payload._choose (the first of a layer wins).
    # Loaded modules and config keys are read in registry order (pyproject's entry points), env vars
    # in reverse: exactly the order of the hand-written tables this loop replaced (compared over
    # random contexts), so no detection result changed.
    ordered = list(known.values())
    for kind, present in (("module", lambda key: key in modules), ("env", lambda key: bool(environ.get(key))),
                          ("wandb_config", lambda key: key in config)):
        frameworks_in_order = ordered[::-1] if kind == "env" else ordered
        for framework in frameworks_in_order:
            for hint in framework.hints:
                if hint.kind != kind or not present(hint.key):
                    continue
                if hint.when is not None and not hint.when(modules):
                    continue
                add(framework.name, hint.confidence, f"{kind}:{hint.key}")
    # The user guide's Primus example puts framework / base_framework into the W&B config.
    for key, _layer in (("framework", WRAPPER), ("base_framework", BASE)):
        value = config.get(key)
        if isinstance(value, str) and value.strip().lower() in known:
            add(value.strip().lower(), 0.6, f"wandb_config:{key}={value}")
    return list(found.values())
