"""Stand-in for ``megatron/training/__init__.py`` (re-exports the global accessors, as upstream)."""

from .global_vars import get_args, get_tensorboard_writer, get_wandb_writer  # noqa: F401
