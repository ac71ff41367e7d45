"""Stand-in for the two ``jax`` names the exporter reads: ``jax.process_index()`` (here from
``JAX_PROCESS_ID``, as a multi-host launcher would set it) and ``jax.__version__`` (0.8.1).
JAX itself is not installed in this environment."""

import os

__version__ = "0.8.1"


def process_index():
    return int(os.environ.get("JAX_PROCESS_ID", "0"))


def process_count():
    return int(os.environ.get("JAX_NUM_PROCESSES", "1"))
