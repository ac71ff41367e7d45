"""When a process sends its points: on its own phase of the flush interval.

The ranks of a synchronous job step together (every all-reduce waits for the slowest), so
they call ``wandb.log`` within milliseconds of each other.  Sent one flush interval after
their first pending point, as before, a 1,000-rank job's requests all reached Lens in the
same ~50 ms of every second, and the last of them waited for the other 999 to be stored.

Instead each process sends on a grid of the wall clock, ``phase * interval + k * interval``:
its pending points leave at the first grid time after the first of them was logged (never
later than one interval after it, as before; where logging is sparse, half an interval sooner on
average, since the first point waits for the next slot, not a whole interval).  The phase
is the rank's multiple of the golden ratio, modulo 1, so any number of consecutive ranks fall
evenly over the interval (the largest gap is at most ~2.6 times the smallest), offset by a hash
of the workload so that the rank 0s of many single-process jobs do not all send on the
second.  Processes on different machines agree on the grid as far as their clocks agree
(NTP: milliseconds), which is all the spreading needs.
"""

from __future__ import annotations

import math
import zlib

#: 1/phi: the step of the low-discrepancy sequence the ranks' phases follow.
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def send_phase(workload_uid: str, rank: int) -> float:
    """The fraction of the flush interval, in [0, 1), at which this rank of this workload sends."""
    offset = zlib.crc32(str(workload_uid or "").encode("utf-8", "surrogatepass")) / 2.0 ** 32
    return (offset + max(0, int(rank)) * GOLDEN) % 1.0


def next_send(now: float, interval: float, phase: float) -> float:
    """The first time at or after ``now`` on the grid ``(phase + k) * interval``."""
    offset = phase * interval
    return offset + math.ceil((now - offset) / interval) * interval
