"""Stand-in for ``keras.backend.backend()`` (the ``KERAS_BACKEND`` variable, default tensorflow)."""

import os


def backend():
    return os.environ.get("KERAS_BACKEND", "tensorflow")
