"""Printing shared by the ``primus-lens`` commands: tables, colour, progress (rich).

rich is imported here, lazily, and only by the commands: the exporter's start-up never loads
the CLI, so a training program never pays for it.  Colour and live bars appear on a terminal
only; piped output is plain text with the same aligned columns.
"""

import os
import sys
from typing import Optional, Sequence

# Piped output has no terminal width: wide enough that a table row never wraps.
_PIPE_WIDTH = 200


def console(stderr: bool = False):
    """A rich Console on stdout (or stderr): colour on a terminal only (and never with NO_COLOR)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    # soft_wrap: long lines (paths, URLs, a fix) are left to the terminal to wrap, so they copy
    # and grep whole; tables have their own widths.
    return Console(file=stream, highlight=False, soft_wrap=True, width=None if tty else _PIPE_WIDTH,
                   no_color=bool(os.environ.get("NO_COLOR")) or None)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = (),
          title: Optional[str] = None):
    """An aligned table without borders (text left, the ``right`` columns right-aligned)."""
    from rich.table import Table

    t = Table(box=None, title=title, title_justify="left", show_edge=False, pad_edge=False,
              header_style="bold", padding=(0, 1))
    for i, name in enumerate(columns):
        t.add_column(name, justify="right" if i in right else "left", no_wrap=True)
    for row in rows:
        t.add_row(*row)
    return t


def print_table(out, t, indent: int = 0) -> None:
    """Print table ``t`` at its natural width, indented: on a terminal narrower than the table
    the rows run over (and the terminal wraps them) rather than rich cropping cells to "…"."""
    from rich.console import Console
    from rich.padding import Padding

    width = out.measure(t, options=out.options.update(width=_PIPE_WIDTH * 4)).maximum + indent
    if width > out.width:
        # Console.print never goes wider than its console: a wider one on the same stream.
        out = Console(file=out.file, width=width, force_terminal=out.is_terminal, color_system=out.color_system,
                      no_color=out.no_color, highlight=False)
    out.print(Padding(t, (0, 0, 0, indent), expand=False))


class Progress:
    """A points progress bar on stderr (a live bar on a terminal, one summary line otherwise)."""

    def __init__(self, total: int, description: str = "points"):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._console = console(stderr=True)
        self._live = self._console.is_terminal
        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=self._console,
                                 disable=not self._live)
        self._task = self._bar.add_task(description, total=total)
        self.total, self.done = total, 0

    def __enter__(self):
        self._bar.start()
        return self

    def advance(self, n: int) -> None:
        self.done += n
        self._bar.update(self._task, advance=n)

    def log(self, text: str) -> None:
        """A line above the bar (a retry, a failure) that does not break it."""
        self._console.print(text, markup=False, highlight=False)

    def __exit__(self, *exc):
        self._bar.stop()
        if not self._live:
            self._console.print(f"{self.done}/{self.total} points", markup=False)
        return False


def print_json(obj) -> None:
    """A report as indented JSON on stdout (``--json``)."""
    import json

    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def quiet_broken_pipe() -> None:
    """The reader of stdout went away (``primus-lens doctor --json | head -1``): point stdout
    at /dev/null so neither the rest of the output nor the interpreter's final flush raises
    a BrokenPipeError traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def request_error(exc: BaseException) -> str:
    """What went wrong with a request, in a few words (the repr of requests' nested
    exceptions is several hundred characters that all say the same thing)."""
    import requests

    text = str(exc)
    if isinstance(exc, requests.Timeout):
        return "no answer in time (timed out)"
    for needle, cause in (("Connection refused", "connection refused"),
                          ("Name or service not known", "host name not found"),
                          ("Temporary failure in name resolution", "host name not found"),
                          ("nodename nor servname", "host name not found"),
                          ("No route to host", "no route to host"),
                          ("Network is unreachable", "network unreachable"),
                          ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted")):
        if needle in text:
            return cause
    return f"{type(exc).__name__}: {text[:200]}"

