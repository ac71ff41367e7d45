"""The generic heuristics over the declared hints (core/detection/heuristics.py).

The equal-confidence cases pin the evidence order of the hand-written tables the loop replaced
(the first guess of a layer wins a tie in payload._choose).
"""

import types

import pytest

from primus_lens_wandb_exporter.core.detection import DetectionContext, build_payload
from primus_lens_wandb_exporter.core.detection.heuristics import lens_detect_frameworks

IDENTITY = types.SimpleNamespace(workload_uid="w", pod_uid="", pod_name="w-0", namespace="default")


def _detect(modules=(), environ=None, config=None):
    context = DetectionContext(modules=frozenset(modules), environ=environ or {}, wandb_config=config or {})
    evidence = lens_detect_frameworks(context)
    return evidence, build_payload([], evidence, IDENTITY, environ or {}, {}, frozenset(modules))["detection"]


@pytest.mark.parametrize("modules, environ, config, wrapper, base", [
    # env vars of equal confidence: DeepSpeed's come first
    ((), {"DEEPSPEED_CONFIG": "ds.json", "MEGATRON_LM_PATH": "/m"}, {}, None, "deepspeed"),
    # config keys of equal confidence: Megatron's come first
    ((), {}, {"tensor_model_parallel_size": 2, "zero_optimization": {}}, None, "megatron"),
    # loaded modules of equal confidence: Megatron's before DeepSpeed's
    (("megatron.core", "deepspeed.runtime.engine"), {}, {}, None, "megatron"),
    # a specific base beats the generic ones; PyPI's unrelated primus is no AMD Primus
    (("torch", "primus"), {}, {"_name_or_path": "gpt2"}, None, "transformers"),
    (("primus.core.runtime", "torch"), {"PRIMUS_CONFIG": "x"}, {}, "primus", "pytorch"),
    (("lightning.pytorch.trainer", "transformers.trainer"), {}, {}, "lightning", None),
])
def test_hints_choose_as_the_tables_did(modules, environ, config, wrapper, base):
    _evidence, detection = _detect(modules, environ, config)
    assert (detection["wrapper"], detection["base"], detection["method"]) == (wrapper, base, "heuristic")


def test_each_hint_is_an_indicator_and_the_strongest_confidence_counts():
    evidence, _ = _detect(("megatron.training", "megatron.core"), {"MEGATRON_LM_PATH": "/m"},
                          {"pipeline_model_parallel_size": 2, "framework": "Megatron"})
    (megatron,) = [e for e in evidence if e.name == "megatron"]
    assert megatron.indicators == ("module:megatron.training", "module:megatron.core", "env:MEGATRON_LM_PATH",
                                   "wandb_config:pipeline_model_parallel_size", "wandb_config:framework=Megatron")
    assert megatron.confidence == 0.75 and megatron.method == "heuristic" and megatron.layer == "base"
