"""Printing shared by the ``primus-lens`` commands."""

import sys


def progress_bar(total: int):
    """A points progress bar on stderr (tqdm when installed); call ``update(n)``, then ``update(0, done=True)``."""
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="pt", file=sys.stderr)

        def update(n, done=False):
            bar.update(n)
            if done:
                bar.close()
        return update
    except ImportError:
        state = {"n": 0}

        def update(n, done=False):
            state["n"] += n
            end = "\n" if done else "\r"
            print(f"{state['n']}/{total} points", end=end, file=sys.stderr)
        return update


