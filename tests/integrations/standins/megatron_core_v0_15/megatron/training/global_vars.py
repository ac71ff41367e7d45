"""Stand-in for Megatron-LM ``megatron/training/global_vars.py``.

Reproduces, in our own minimal code, the behaviour of NVIDIA/Megatron-LM tag
core_v0.15.0 (same at main d98e8a64, 2026-08): process-wide args, a TensorBoard
writer and a W&B writer that exist only on the **last** rank
(``args.rank == args.world_size - 1``); ``get_wandb_writer()`` returns the ``wandb``
module itself after ``wandb.init``.  Not Megatron's code.
"""

import os

_ARGS = None
_TENSORBOARD_WRITER = None
_WANDB_WRITER = None


class TensorBoardWriter:
    """What Megatron uses of ``torch.utils.tensorboard.SummaryWriter`` (add_scalar), in memory."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


def get_args():
    assert _ARGS is not None, "args is not initialized."
    return _ARGS


def get_tensorboard_writer():
    return _TENSORBOARD_WRITER


def get_wandb_writer():
    return _WANDB_WRITER


def set_global_variables(args):
    global _ARGS
    _ARGS = args
    _set_tensorboard_writer(args)
    _set_wandb_writer(args)


def _set_tensorboard_writer(args):
    global _TENSORBOARD_WRITER
    if getattr(args, "tensorboard_dir", None) and args.rank == args.world_size - 1:
        _TENSORBOARD_WRITER = TensorBoardWriter(args.tensorboard_dir)


def _set_wandb_writer(args):
    global _WANDB_WRITER
    if getattr(args, "wandb_project", "") and args.rank == args.world_size - 1:
        if args.wandb_exp_name == "":
            raise ValueError("Please specify the wandb experiment name!")
        import wandb

        save_dir = args.wandb_save_dir or os.path.join(args.save, "wandb")
        os.makedirs(save_dir, exist_ok=True)
        wandb.init(dir=save_dir, name=args.wandb_exp_name, project=args.wandb_project, config=vars(args))
        _WANDB_WRITER = wandb
