"""Seed-compatible entry point (user guide FAQ Q8): ``install_wandb_hook()``."""

from .core.autoload import install, uninstall


def install_wandb_hook() -> bool:
    """Activate capture in this interpreter now (notebooks, or no start-up line).

    Patches ``wandb`` at once if it is imported, else when it is. Returns True when active;
    False when ``PRIMUS_LENS_WANDB_HOOK=false``.
    """
    try:
        return install()
    except Exception as exc:  # never break the notebook
        from .core.log import get_logger

        get_logger().warning("Primus Lens hook not installed: %r", exc)
        return False


def uninstall_wandb_hook() -> None:
    """Undo every patch (for tests and notebooks)."""
    uninstall()


__all__ = ["install_wandb_hook", "uninstall_wandb_hook"]
