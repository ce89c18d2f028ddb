"""The learning-rate schedule every trainer here uses: linear warmup, then a half cosine down to a floor.

    lr(s) = peak * (s + 1) / W                                          for s < W
    lr(s) = peak * (floor + (1 - floor) * (1 + cos(pi * (s - W) / (T - W))) / 2)   otherwise

Factories end at 10 % of the peak (short runs gain from ending low but not at zero); experts at zero.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, peak: float, warmup: int, total: int, floor: float = 0.0) -> float:
    """The lr at `step` (0-based) of a `total`-step run with `warmup` warmup steps; `floor` is a share of `peak`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
