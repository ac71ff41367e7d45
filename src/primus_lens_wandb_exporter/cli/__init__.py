"""The ``primus-lens`` command: ``serve``, ``demo``, ``doctor``, ``replay``, ``import-wandb``.

One module per command, each with ``register(subparsers)``: :mod:`.doctor`, :mod:`.replay`,
:mod:`.demo`; ``import-wandb`` is :mod:`primus_lens_wandb_exporter.import_wandb`, ``serve``
:mod:`primus_lens_wandb_exporter.server.cli`.  Shared printing is in :mod:`.output`.
"""

import argparse
import sys
from typing import List, Optional

from .._version import __version__
from . import demo, doctor, replay


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="primus-lens", description="Primus Lens WandB exporter and server")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor.register(sub)
    replay.register(sub)
    demo.register(sub)

    from ..import_wandb import register as register_import_wandb

    register_import_wandb(sub)

    try:
        from ..server.cli import register
    except ImportError as exc:
        serve = sub.add_parser("serve", help="run the Lens server (needs the [server] extra)")
        serve.set_defaults(func=lambda args, exc=exc: _missing_server(exc))
    else:
        register(sub)
    return parser


def _missing_server(exc) -> int:
    print(f"the Lens server needs the [server] extra: pip install 'primus-lens-wandb-exporter[server]' ({exc})",
          file=sys.stderr)
    return 2


#: Exit status when the reader of stdout went away (``| head``): what a shell reports for a
#: process stopped by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # --help writes too
        result = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # `primus-lens ... | head -1`: the rest of the output has no reader; no traceback.
        from .output import quiet_broken_pipe

        quiet_broken_pipe()
        return EXIT_BROKEN_PIPE
    return int(result or 0)
