"""Real Megatron-Bridge 0.3.1 + megatron-core 0.16.1 (PyPI, newest on Python 3.11): the
callback path, as far as it imports on CPU.

Bridge imports Transformer Engine, Triton and ModelOpt eagerly; those are CUDA-only, so the
program imports the real TE-less ``megatron.core`` first and then answers those three
packages with inert stubs (``bridge_cpu_stubs.py`` explains why and how).  Everything the
hook touches is Bridge's own: ``pretrain.py`` (which binds ``normalize_callbacks`` at import:
``pretrain.py:19``, ``:75 callback_manager = normalize_callbacks(callbacks)``),
``CallbackManager.fire("on_train_step_end", CallbackContext(...))`` as ``train.py:385-398``,
then ``global_state.train_state.step += 1`` (``train.py:445``), then the W&B writes of Bridge's
``training_log`` (``utils/train_utils.py:554``: ``wandb_writer.log({key: loss}, iteration)``,
``iteration = train_state.step``) through the real lazy ``GlobalState.wandb_logger``
(``state.py:187``).  The training step itself (a GPT model on GPU) is not run.

The adapter's version gate once declined 0.3.1 (its low bound was 0.5, from an unreleased
0.7.0 read in source) although its hooked API is the one the adapter expects; this run checked
that and the gate now starts at 0.3.  megatron-core wheels carry no
``megatron/training``: the Megatron-LM ``training_log`` hook stays stand-in-tested.
"""

import os

import pytest

from helpers.real import assert_points, assert_server_has, require, run_real

require("megatron-bridge", "megatron-core")

from helpers import wandb_oracle  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

PROGRAM = r'''
import json, os, sys, types
sys.path.insert(0, os.environ["BRIDGE_STUBS_DIR"])
import torch
# The real TE-less megatron.core first (it decides HAVE_TE at import), then the CPU stubs.
import megatron.core, megatron.core.tensor_parallel, megatron.core.models.gpt, megatron.core.transformer
import megatron.core.optimizer
import bridge_cpu_stubs
bridge_cpu_stubs.install()

import megatron.bridge
from megatron.bridge.training import callbacks as cbm
from megatron.bridge.training import pretrain as pretrain_mod
from megatron.bridge.training.state import GlobalState

wb = os.environ.get("WB") == "1"
tmp = os.environ["REAL_TMP"]
cfg = types.SimpleNamespace(  # the fields GlobalState.wandb_logger reads (state.py:187-217)
    logger=types.SimpleNamespace(wandb_project="bridge-real" if wb else None, wandb_exp_name="real",
                                 wandb_save_dir=tmp, wandb_entity=None),
    checkpoint=types.SimpleNamespace(save=tmp), to_dict=lambda: {"real": True})
state = GlobalState()
state._cfg = cfg  # the cfg setter would build a signal handler from a full ConfigContainer


class UserCallback(cbm.Callback):
    def __init__(self):
        self.steps = []

    def on_train_step_end(self, context):
        self.steps.append(context.state.train_state.step)


user_cb = UserCallback()
manager = pretrain_mod.normalize_callbacks([user_cb])  # pretrain.py:75
model = [torch.nn.Linear(4, 1)]
logged = []  # (name, iteration, value) as Bridge's training_log writes them
for i in range(5):
    loss_dict = {"lm loss": torch.tensor(2.0 / (i + 1))}
    grad_norm = 1.0 + i
    if cbm.should_fire(manager, "on_train_step_end"):  # train.py:385-398
        manager.fire("on_train_step_end", cbm.CallbackContext(
            state=state, model=model, user_state=manager.user_state, optimizer=None, scheduler=None,
            loss_dict=loss_dict, grad_norm=grad_norm, skipped_iter=False))
    state.train_state.step += 1  # train.py:445
    iteration = state.train_state.step  # train_utils.py:379
    writer = state.wandb_logger  # train_utils.py:381
    for key in loss_dict:
        logged.append(["lm loss", iteration, float(loss_dict[key])])
        if writer:
            writer.log({key: loss_dict[key]}, iteration)
    logged.append(["grad-norm", iteration, grad_norm])
    if writer:
        writer.log({"grad-norm": grad_norm}, iteration)
if wb:
    import wandb
    wandb.finish()
print("REAL-ORACLE:" + json.dumps({
    "logged": logged, "user_steps": user_cb.steps, "bridge": megatron.bridge.__version__,
    "core": megatron.core.__version__,
    "pretrain_binds_callbacks_name": pretrain_mod.normalize_callbacks is cbm.normalize_callbacks}))
'''


def _run(server, tmp, prefix, **env):
    return run_real(server, tmp, prefix, PROGRAM, BRIDGE_STUBS_DIR=HERE, **env)


@pytest.fixture(scope="module")
def gate_open(module_server, tmp_path_factory):
    return _run(module_server, tmp_path_factory.mktemp("bridge"), "bridge-open")


@pytest.fixture(scope="module")
def gate_shipped(gate_open):
    # The gate as shipped admits 0.3.1: the same run.
    return gate_open


def assert_detected(run, wandb_logger):
    det = run.detection("megatron_bridge")
    assert (det.get("base"), det.get("method")) == ("megatron_bridge", "exact"), det
    claim = det["evidence"]["base_frameworks"]["megatron_bridge"]
    assert (claim["version"], claim["step_source"], claim["wandb_logger"]) == \
        ("0.3.1", "train_state.step", wandb_logger), claim
    assert "callback:megatron.bridge.training.callbacks" in claim["indicators"], claim


def expected_points(run):
    oracle = run.oracle()
    assert (oracle["bridge"], oracle["core"]) == ("0.3.1", "0.16.1")
    assert oracle["user_steps"] == [0, 1, 2, 3, 4], "the user's callback did not run as Bridge runs it"
    return {(name, step): value for name, step, value in oracle["logged"]}


def test_callback_path_reports_at_bridges_iteration(gate_open):
    """Gate widened: the callback reports loss_dict and grad_norm at Bridge's training_log
    iteration (1..5: the event fires before ``train_state.step += 1``), each once."""
    assert_detected(gate_open, "off")
    expected = expected_points(gate_open)
    assert len(expected) == 10
    assert_points(gate_open.rows, "megatron_bridge", expected)
    assert_server_has(gate_open, "megatron_bridge", expected)


def test_wandb_logger_run_is_mirrored_exactly_from_wandb(module_server, tmp_path):
    """Gate widened, ``logger.wandb_project`` set: W&B is the source (wandb.init happens lazily,
    after the first callback), nothing comes from the callback too."""
    run = _run(module_server, tmp_path, "bridge-wandb", WB=1)
    assert_detected(run, "on")
    expected = wandb_oracle.wandb_expected_points(run.wandb_run_dir())
    assert {(n, s) for (n, _), (s, _) in expected.items()} == set(expected_points(run))
    wandb_oracle.assert_same_points(expected, wandb_oracle.jsonl_points(run.output), "JSONL sink")
    assert {r["source"] for r in run.rows} == {"wandb"}, "a point also came from the Bridge callback"
    from helpers.e2e import mirrored_points
    wandb_oracle.assert_same_points(expected, mirrored_points(run.server, run.workload, expected), "Lens server")


def test_bridge_0_3_1_is_hooked_with_the_gate_as_shipped(gate_shipped):
    run = gate_shipped
    expected = expected_points(run)
    assert_points(run.rows, "megatron_bridge", expected)  # first: today nothing, so no 30 s wait below
    assert_detected(run, "off")
