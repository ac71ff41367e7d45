"""What a rollup tail costs in memory: the figure `serve --rollup-tails` is sized by.

docs/server.md and `--rollup-tails --help` say a tail takes ~2-6 KiB, so the default 16,384
tails take ~35-95 MiB a server process (a tail holds its open base block's points, up to 64,
and the series' phases put the 20 long series' blocks at different fills).  This measures real tails (the store's own, after
real ingests) by walking what each one references, and fails if a change to `Tail` makes
them larger than the documented bound.  `-s` prints the sizes.
"""

from __future__ import annotations

import sys

from primus_lens_wandb_exporter.server.storage import SeriesBatch, open_store
from primus_lens_wandb_exporter.server.storage.caches import TailCache

KIB = 1024


def _deep_size(obj, seen) -> int:
    """Bytes of ``obj`` and of every object it references that ``seen`` has not counted yet."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (tuple, list)):
        size += sum(_deep_size(x, seen) for x in obj)
    elif hasattr(obj, "__slots__"):
        size += sum(_deep_size(getattr(obj, a), seen) for a in obj.__slots__ if hasattr(obj, a))
    return size


def _tail_sizes(tmp_path, name, ranks, prefill, appends):
    store = open_store(f"sqlite:///{tmp_path}/{name}.db")
    try:
        def ingest(rank, steps):
            series = {f"metric_{m}": {st: (st % 97 / 7.0, 1.7e12 + st, float(st)) for st in steps} for m in range(10)}
            store.ingest_many([([SeriesBatch("wl", "wandb", "run", rank, "pod", "uid", "ns", series)], [], [])])

        for rank in range(ranks):
            ingest(rank, range(prefill))
        for k in range(appends):  # a fleet's one point per metric a request
            for rank in range(ranks):
                ingest(rank, [prefill + k])
        tails = list(store._tails._tails.values())
        seen: set = set()
        return sorted(_deep_size(t, seen) for t in tails)
    finally:
        store.close()


def test_a_rollup_tail_stays_within_the_documented_size(tmp_path):
    short = _tail_sizes(tmp_path, "short", ranks=20, prefill=300, appends=40)
    long = _tail_sizes(tmp_path, "long", ranks=2, prefill=100_000, appends=40)
    assert len(short) == 200 and len(long) == 20
    print(f"\nrollup tail at row ~340: median {short[100]} B, max {short[-1]} B; "
          f"at row ~100,040: median {long[10]} B, max {long[-1]} B")
    assert short[-1] <= 4 * KIB and long[-1] <= 6.5 * KIB, (short[-1], long[-1])
    # The default bound times the larger size: what the docs quote for a process.
    assert TailCache.DEFAULT * long[-1] <= 95 * KIB * KIB
