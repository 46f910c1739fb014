"""The one back-off every retry uses: doubling from a base up to a cap, with jitter.

``delay`` never overflows, however many failures in a row: a loop that failed for a year
waits ``cap``, like one that failed ten times.
"""

from __future__ import annotations

import random

# 2**62 times any base is beyond every cap; more doublings change nothing.
_MAX_DOUBLINGS = 62


def delay(failures: int, base: float, cap: float) -> float:
    """The wait after ``failures`` failures in a row (0 after none), without jitter."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - 1, _MAX_DOUBLINGS))


def jittered(seconds: float, low: float = 0.8, high: float = 1.0) -> float:
    """``seconds`` scaled by a random factor, so many retries do not fire together."""
    return seconds * random.uniform(low, high)
