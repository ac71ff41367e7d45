"""AMD Primus adapter, against a stand-in of AMD-AGI/Primus v26.5.1 (``standins/primus_amd``).

Primus is not on PyPI (PyPI's ``primus`` is an unrelated package: ``standins/pypi_primus``).
The stand-in reproduces ``primus/core/runtime/train_runtime.py`` (``PrimusRuntime`` call
order: distributed context -> ``_initialize_adapter`` -> ``_initialize_trainer`` ->
patch phases -> trainer lifecycle), its Megatron and TorchTitan backends, and Primus's
own wrapper of Megatron's ``training_log``
(``primus/backends/megatron/patches/training_log/print_rank_last_patches.py``).
Megatron is the ``megatron_head`` stand-in (main d98e8a64), TorchTitan ``torchtitan_v0_2_2``.
"""

import os
import sys

import pytest

# The stand-ins folder is never put on this process's sys.path (it holds directories
# named like real packages); only the programs under test see the stand-in roots.
from helpers import standins  # noqa: E402
from helpers.e2e import module_server, new_workload  # noqa: E402,F401  (a real Lens server per module)

pytest.importorskip("torch")

RUN_PRIMUS = """
import types
from primus.core.runtime.train_runtime import PrimusRuntime

params = types.SimpleNamespace(log_throughput=True, use_rocm_mem_info=True)
runtime = PrimusRuntime(types.SimpleNamespace(framework=%r, params=params, backend_path=None))
runtime.run_train_module("pre_trainer")
"""

PRIMUS_ENRICHED = "[Primus] rocm mem usage/free/total"


def _layers(result):
    det = result.detection["detection"]
    assert det["method"] == "exact", result.detection
    return det["wrapper"], det["base"], det["layers"]


def test_primus_megatron_claims_wrapper_and_base_and_both_training_log_wrappers_run(module_server, tmp_path):
    # Normal order: the exporter wraps training_log when Megatron is imported; Primus's
    # before_train patch then wraps ours.  Both run; each metric is reported once.
    result = standins.run(RUN_PRIMUS % "megatron", tmp_path, ["primus_amd", "megatron_head"],
                         workload=new_workload("primus-mt"), server=module_server)
    wrapper, base, layers = _layers(result)
    assert (wrapper, base) == ("primus", "megatron")
    assert layers["wrapper"]["version"] == "26.5"
    assert layers["base"]["version"] == "0.20.0"
    primus_evidence = result.detection["evidence_wrapper"]["primus"]
    assert (primus_evidence["backend"], primus_evidence["rank"], primus_evidence["world_size"]) == ("megatron", 0, 1)
    assert "Wrapped training_log with Primus print_rank_last hook" in result.stdout
    assert result.stdout.count(PRIMUS_ENRICHED) == 2  # log_interval 2, 4 iterations
    assert sorted(result.series("lm loss", source="megatron")) == [1, 2, 3, 4]
    result.assert_each_point_once()
    result.check_server()


def test_primus_wrapper_already_in_place_is_chained_when_the_exporter_installs_later(module_server, tmp_path):
    # Reverse order (a notebook calling install() late): Primus's wrapper is in place
    # first, ours goes around it.  We still bind by Megatron's real signature (found
    # under Primus's ``(*args, **kwargs)``), Primus's hook still runs, metrics once.
    code = """
import primus_lens_wandb_exporter as lens
lens.uninstall()
import primus.backends.megatron.patches  # Primus registers its training_log patch first
from primus.core.patches import register_patch

@register_patch("test.install_exporter_late", backend="megatron", phase="before_train")
def _install_exporter_late(ctx):
    import megatron.training.training as mt
    assert getattr(mt.training_log, "_primus_training_log_print_rank_wrapper", False)
    lens.install()
""" + RUN_PRIMUS % "megatron"
    result = standins.run(code, tmp_path, ["primus_amd", "megatron_head"],
                         workload=new_workload("primus-late"), server=module_server)
    assert result.detection["detection"]["base"] == "megatron"
    assert result.stdout.count(PRIMUS_ENRICHED) == 2
    assert sorted(result.series("lm loss", source="megatron")) == [1, 2, 3, 4]
    assert sorted(result.series("grad-norm", source="megatron")) == [1, 2, 3, 4]
    result.assert_each_point_once()
    result.check_server()


def test_primus_torchtitan_backend_claims_torchtitan(module_server, tmp_path):
    result = standins.run(RUN_PRIMUS % "torchtitan", tmp_path, ["primus_amd", "torchtitan_v0_2_2"],
                         workload=new_workload("primus-tt"), server=module_server)
    wrapper, base, layers = _layers(result)
    assert (wrapper, base) == ("primus", "torchtitan")
    assert result.detection["evidence_wrapper"]["primus"]["backend"] == "torchtitan"
    assert sorted(result.series("loss_metrics/global_avg_loss", source="torchtitan")) == [1, 2, 3]
    result.assert_each_point_once()
    result.check_server()


def test_pypi_primus_is_not_taken_for_amd_primus(tmp_path):
    result = standins.run("import primus\nassert primus.hello() == 'unrelated'\n", tmp_path, ["pypi_primus"],
                         workload="pypi-primus")
    assert result.detection["detection"]["wrapper"] is None
    assert "primus" not in result.detection["hints"]["possible_frameworks"]


@pytest.mark.parametrize("version, patched", [("0.7.0", False), ("26.2", True), ("26.5", True), ("27.1", False)])
def test_adapter_enables_itself_only_on_tested_primus_versions(monkeypatch, version, patched):
    import types

    from primus_lens_wandb_exporter.core import patching, registry
    from primus_lens_wandb_exporter.integrations import primus as adapter

    class PrimusRuntime:
        def _initialize_adapter(self):
            pass

    original = PrimusRuntime.__dict__["_initialize_adapter"]
    module = types.ModuleType("primus.core.runtime.train_runtime")
    module.PrimusRuntime = PrimusRuntime
    monkeypatch.setitem(sys.modules, "primus", types.SimpleNamespace(__version__=version))
    try:
        registry.run_watch(adapter.PRIMUS, None, module)
        assert (PrimusRuntime.__dict__["_initialize_adapter"] is not original) is patched
    finally:
        patching._patches[:] = [p for p in patching._patches if p[0] is not PrimusRuntime]


def test_adapters_import_no_framework_the_program_did_not_import(tmp_path):
    # Every adapter module is loaded as a plugin when the Recorder starts; none of them may
    # pull in Primus, Megatron, TorchTitan, JAX, MaxText, CLU or Keras.
    pytest.importorskip("wandb")
    code = """
import sys, wandb
run = wandb.init(project="plain")
run.log({"loss": 1.0})
run.finish()
from primus_lens_wandb_exporter.integrations import megatron, primus, torchtitan, jax, keras  # noqa: F401
frameworks = {"primus", "megatron", "torchtitan", "jax", "MaxText", "maxtext", "clu", "keras", "tensorflow"}
print("FRAMEWORKS-LOADED", sorted(m for m in sys.modules if m.split(".")[0] in frameworks))
"""
    result = standins.run(code, tmp_path, [], workload="plain")
    assert "FRAMEWORKS-LOADED []" in result.stdout
    assert result.series("loss", source="wandb") == {0: 1.0}
