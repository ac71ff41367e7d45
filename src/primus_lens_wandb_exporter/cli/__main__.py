"""``python -m primus_lens_wandb_exporter.cli``: the ``primus-lens`` command."""

import sys

from . import main

sys.exit(main())
