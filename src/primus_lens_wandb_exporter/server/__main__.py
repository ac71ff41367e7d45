"""``python -m primus_lens_wandb_exporter.server``: the server without the ``primus-lens`` entry point."""

import sys

from .cli import main

sys.exit(main())
