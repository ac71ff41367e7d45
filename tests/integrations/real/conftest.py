"""Tests against the REAL framework packages from PyPI (issue 13), not stand-ins.

Each module runs one framework's hooked path in a fresh interpreter, exactly as a user's
program runs: the exporter is activated by its installed start-up line, wandb is real
(offline), and the program reports to a real Lens server process (one per module,
``helpers.e2e.module_server``).  What the exporter emitted is read from its local JSONL sink
and from the server; what the framework itself logged is read from an independent record
(W&B's ``.wandb`` file via ``wandb_oracle``, TensorBoard event files, the framework's own
metrics file or history) and the two must agree point for point, each point once.

The packages are NOT in the default environment: ``make test-real`` (``scripts/test-real.sh``,
``requirements/real-*.txt``) installs them.  Without them every module here skips with the reason;
with another release than the one a module verifies, it skips too (the docs table
``docs/frameworks/verified.md`` names exactly the releases these modules verified).
The frameworks are never imported into the pytest process (TensorFlow or Megatron take
15-30 s to import here); only the program under test imports them.
"""

import os

import pytest

from helpers.e2e import module_server  # noqa: F401  (a real Lens server per module)


def pytest_configure(config):
    config.addinivalue_line("markers", "real: runs a real framework package from PyPI (make test-real)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integrations/real/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.real)


