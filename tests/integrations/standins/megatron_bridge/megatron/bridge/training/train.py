"""Stand-in for the loop of Megatron-Bridge ``training/train.py`` (main 067f987d):
``train_step`` -> ``on_train_step_end`` (context with loss_dict of 0-dim tensors and
grad_norm) -> ``train_state.step += 1`` -> ``training_log`` that writes
``wandb_writer.log({key: value}, iteration)`` when the W&B logger exists (last rank with
``cfg.logger.wandb_project``; created lazily, as ``GlobalState.wandb_logger``)."""

import os
import types

import torch

from megatron.bridge.training.callbacks import CallbackContext, should_fire


class GlobalState:
    def __init__(self, cfg):
        self.cfg = cfg
        self.train_state = types.SimpleNamespace(step=0, consumed_train_samples=0)
        self._wandb_logger = None

    @property
    def wandb_logger(self):
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if self._wandb_logger is None and self.cfg.logger.wandb_project and rank == world - 1:
            import wandb

            wandb.init(project=self.cfg.logger.wandb_project, name=self.cfg.logger.wandb_exp_name,
                       dir=self.cfg.logger.wandb_save_dir)
            self._wandb_logger = wandb
        return self._wandb_logger


def training_log(loss_dict, grad_norm, global_state):
    wandb_writer = global_state.wandb_logger
    iteration = global_state.train_state.step
    if wandb_writer:
        for key, value in loss_dict.items():
            wandb_writer.log({key: value}, iteration)
        if grad_norm is not None:
            wandb_writer.log({"grad-norm": grad_norm}, iteration)


def train(cfg, callback_manager):
    global_state = GlobalState(cfg)
    model = torch.nn.Linear(4, 1)
    optimizer = types.SimpleNamespace(param_groups=[{"lr": 0.1}])  # Bridge's optimizer; plain SGD below
    while global_state.train_state.step < cfg.train.train_iters:
        inputs, targets = torch.randn(4, 4), torch.randn(4, 1)
        model.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-0.1)
        loss_dict = {"lm loss": loss.detach()}
        if should_fire(callback_manager, "on_train_step_end"):
            callback_manager.fire("on_train_step_end", CallbackContext(
                state=global_state, model=[model], user_state=callback_manager.user_state,
                optimizer=optimizer, loss_dict=loss_dict, grad_norm=grad_norm, skipped_iter=False))
        global_state.train_state.step += 1
        training_log(loss_dict, grad_norm, global_state)
    if global_state._wandb_logger is not None:
        global_state._wandb_logger.finish()
