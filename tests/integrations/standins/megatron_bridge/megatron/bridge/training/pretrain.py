"""Stand-in for Megatron-Bridge ``training/pretrain.py`` (main 067f987d): ``pretrain(config,
forward_step_func, callbacks=None)`` normalises callbacks with the name it imported
from ``callbacks`` and runs the train loop."""

from megatron.bridge.training.callbacks import normalize_callbacks
from megatron.bridge.training.train import train


def pretrain(config, forward_step_func=None, callbacks=None):
    callback_manager = normalize_callbacks(callbacks)
    return train(config, callback_manager)
