"""A seeded held-out split by group: every row of a group (e.g. all evolved variants of one
seed sample) lands on the same side, so near-copies never sit on both sides of the split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def heldout_groups(groups: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The groups held out: round(fraction · #groups), at least one and at most all but one
    when there are two or more groups (none otherwise, or when fraction is 0)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    distinct = sorted(set(groups))
    if fraction == 0 or len(distinct) < 2:
        return set()
    count = min(max(1, round(fraction * len(distinct))), len(distinct) - 1)
    order = np.random.default_rng(seed).permutation(len(distinct))
    return {distinct[i] for i in order[:count]}
