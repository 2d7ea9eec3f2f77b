"""How many samples a selection keeps: an absolute count or a fraction of the pool."""

from __future__ import annotations


def resolve_budget(pool_size: int, *, count: int | None = None, fraction: float | None = None) -> int:
    """Budget for a pool: `count` capped at the pool, or round(fraction · pool) (at least 1 if the pool is not empty)."""
    if (count is None) == (fraction is None):
        raise ValueError("give exactly one of count or fraction")
    if pool_size <= 0:
        return 0
    if count is not None:
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        return min(count, pool_size)
    assert fraction is not None
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, min(pool_size, int(fraction * pool_size + 0.5)))
