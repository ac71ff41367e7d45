"""Logging for the exporter: one logger, lines tagged ``Primus Lens``, errors logged once.

``PRIMUS_LENS_WANDB_DEBUG=true`` sends debug lines to stderr.  Without it only
warnings reach stderr, each at most once.  ``PRIMUS_LENS_TESTING=1`` makes our own
swallowed errors raise, so tests see them.
"""

import logging
import os
import sys

LOGGER_NAME = "primus_lens_wandb_exporter"
_FORMAT = "[Primus Lens] %(levelname)s %(message)s"
# Process-wide (documented): the keys already logged by log_once, so a repeated error is one line.
_once = set()
_configured = False


def get_logger():
    """The package logger (``logging.getLogger("primus_lens_wandb_exporter")``)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not _configured:
        configure()
    return logger


def configure(debug=None):
    """Attach a stderr handler; debug level when ``PRIMUS_LENS_WANDB_DEBUG`` is true."""
    global _configured
    _configured = True
    if debug is None:
        debug = os.environ.get("PRIMUS_LENS_WANDB_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "_primus_lens", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._primus_lens = True
        logger.addHandler(handler)
    # Respect a level the user set (guide FAQ Q6); otherwise choose by the debug switch.
    if logger.level == logging.NOTSET or debug:
        logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False
    return logger


def testing():
    """True under ``PRIMUS_LENS_TESTING=1``: our errors raise instead of being logged."""
    return os.environ.get("PRIMUS_LENS_TESTING", "").strip().lower() in ("1", "true", "yes", "on")


def raise_if_testing(exc):
    if testing():
        raise exc


def log_once(key, level, msg, *args):
    """Log ``msg`` the first time ``key`` is seen; later calls are silent."""
    if key in _once:
        return False
    _once.add(key)
    get_logger().log(level, msg, *args)
    return True
