"""Plain PyTorch: ``pytorch`` is the base, exactly, when a PyTorch loop logs through W&B.

Real programs (real torch on CPU, real wandb offline) in fresh interpreters activated by
the installed start-up line, checked in the real Lens server.
"""

import os

import pytest

from helpers.server import free_port
from helpers.e2e import by_name, module_server, new_workload, points_of  # noqa: F401 (fixture)
from helpers.exporter import ROOT, exporter_env, run_python, wait_for, workload

EXAMPLE = os.path.join(ROOT, "examples", "train_simple.py")

PROCESS_GROUP = """
import torch, torch.distributed as dist, wandb
dist.init_process_group(backend="gloo")
run = wandb.init(project="pg", name="pg")
for step in range(3):
    wandb.log({"loss": 1.0 / (step + 1)})
wandb.finish()
dist.destroy_process_group()
"""

def _single_rank_env(server, tmp_path, uid, **extra):
    return exporter_env(server, tmp_path, uid, RANK=0, LOCAL_RANK=0, WORLD_SIZE=1, MASTER_ADDR="127.0.0.1",
                        MASTER_PORT=free_port(), **extra)


def _detection(server, uid, method):
    det = wait_for(lambda: (lambda d: d if d and d.get("method") == method else None)(
        (workload(server, uid) or {}).get("detection")), timeout=30)
    assert det, workload(server, uid).get("detection")
    return det


def test_train_simple_example_single_process_is_plain_pytorch_exactly(module_server, tmp_path):
    uid = new_workload("torch-simple")
    steps = 12
    run_python(EXAMPLE, exporter_env(module_server, tmp_path, uid), args=("--steps", str(steps)), timeout=180)

    points = points_of(module_server, uid, "wandb", steps * 5)
    series = by_name(points)
    assert set(series) == {"loss", "accuracy", "learning_rate", "grad_norm", "epoch"}
    assert all(sorted(s) == list(range(steps)) for s in series.values())
    assert series["learning_rate"][0] == pytest.approx(0.02)
    det = _detection(module_server, uid, "exact")
    assert (det["wrapper"], det["base"]) == (None, "pytorch"), det
    evidence = det["evidence"]["base_frameworks"]["pytorch"]
    assert evidence["signal"] == "torch.optim.Optimizer.step" and evidence["distributed"] is False, evidence


def test_process_group_with_wandb_run_is_plain_pytorch_exactly(module_server, tmp_path):
    uid = new_workload("torch-pg")
    run_python(PROCESS_GROUP, _single_rank_env(module_server, tmp_path, uid), timeout=180)

    det = _detection(module_server, uid, "exact")
    assert (det["wrapper"], det["base"]) == (None, "pytorch"), det
    evidence = det["evidence"]["base_frameworks"]["pytorch"]
    assert evidence["method"] == "exact" and evidence["distributed"] is True
    assert evidence["backend"] == "gloo" and evidence["world_size"] == 1 and evidence["rank"] == 0
    assert sorted(by_name(points_of(module_server, uid, "wandb", 3))["loss"]) == [0, 1, 2]


def test_pytorch_integration_disabled_leaves_only_the_heuristic(module_server, tmp_path):
    uid = new_workload("torch-off")
    env = _single_rank_env(module_server, tmp_path, uid, PRIMUS_LENS_DISABLED_INTEGRATIONS="pytorch")
    run_python(PROCESS_GROUP, env, timeout=180)

    points_of(module_server, uid, "wandb", 3)
    det = _detection(module_server, uid, "heuristic")
    assert det["base"] == "pytorch" and det["confidence"] < 1.0, det
    assert det["evidence"]["base_frameworks"]["pytorch"]["method"] == "heuristic"
    assert workload(module_server, uid)["detection"]["method"] == "heuristic"



def test_uninstall_removes_the_optimizer_hook(tmp_path):
    code = """
import torch, wandb
from torch.optim import optimizer as opt_mod
import primus_lens_wandb_exporter as lens
from primus_lens_wandb_exporter.integrations import pytorch
before = len(opt_mod._global_optimizer_post_hooks)
lens.uninstall()
print("hooks", before, len(opt_mod._global_optimizer_post_hooks), pytorch.PYTORCH.state.handle is None)
"""
    proc = run_python(code, exporter_env(None, tmp_path, "torch-uninstall", PRIMUS_LENS_WANDB_API_REPORTING="false"))
    assert proc.stdout.split() == ["hooks", "1", "0", "True"], proc.stdout + proc.stderr


OPTIMIZER_HOOK_ERRORS = r"""
import os, sys, torch

class HostileWandb:
    # Stands in sys.modules for a wandb whose attributes fail: our hook must absorb that.
    def __getattr__(self, name):
        raise RuntimeError("hostile " + name)

model = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.5)
sys.modules["wandb"] = HostileWandb()
for testing in ("0", "1"):  # read at each error: one process checks both
    os.environ["PRIMUS_LENS_TESTING"] = testing
    before = model.weight.detach().clone()
    model(torch.ones(1, 2)).sum().backward()
    try:
        opt.step()
        print("ABSORBED")
    except RuntimeError as exc:
        print("RAISED", exc)
    print("STEPPED", not torch.equal(before, model.weight.detach()))
"""


def test_optimizer_hook_errors_never_reach_training_unless_testing(tmp_path):
    env = exporter_env(None, tmp_path, "torch-errors", PRIMUS_LENS_WANDB_API_REPORTING="false")
    proc = run_python(OPTIMIZER_HOOK_ERRORS, env)
    # The hook runs after PyTorch's step: the parameters moved either way.
    assert proc.stdout.split("\n")[:4] == ["ABSORBED", "STEPPED True", "RAISED hostile run", "STEPPED True"], \
        proc.stdout + proc.stderr[-3000:]


@pytest.mark.parametrize("version, supported", [
    ("2.13.0+cpu", True), ("2.0.0", True), ("2.13.1+rocm6.4", True),
    ("1.13.1", False), ("2.14.0", False), ("3.0.0a0", False), (None, False),
])
def test_pytorch_adapter_enables_itself_only_on_tested_torch_versions(version, supported):
    from primus_lens_wandb_exporter.integrations import pytorch

    assert pytorch.PYTORCH.versions.allows(version) is supported
