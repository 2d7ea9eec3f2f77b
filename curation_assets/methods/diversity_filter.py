"""Greedy similarity filter: walk rows in a given order, keep a row only if its cosine
similarity to every already-kept row is <= threshold.

This is near-duplicate removal (order = data order) and the DEITA representation filter
(Liu et al. 2024, "What Makes Good Data for Alignment?": order = descending score,
threshold tau = 0.9, stop at the budget). Neighbours above the threshold come from faiss
range search in blocks of the walk order, so memory is bounded by a block's neighbour
lists; the greedy decision itself is sequential by definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BLOCK = 4_096


@dataclass(frozen=True)
class FilterResult:
    kept: np.ndarray  # kept rows in walk order
    duplicate_of: np.ndarray  # per row: the kept row it is too similar to (-1 if kept or never reached)
    similarity: np.ndarray  # per row: similarity to that kept row (nan if none)


def similarity_filter(x_unit: np.ndarray, threshold: float, *, order: np.ndarray | None = None,
                      budget: int | None = None) -> FilterResult:
    """x_unit: L2-normalised rows. Rows after the budget is reached are neither kept nor marked."""
    import faiss

    x = np.ascontiguousarray(x_unit, dtype=np.float32)
    n = x.shape[0]
    order = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    is_kept = np.zeros(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan)
    kept: list[int] = []
    limit = n if budget is None else budget
    for start in range(0, order.size, _BLOCK):
        if len(kept) >= limit:
            break
        block = order[start:start + _BLOCK]
        lims, sims, ids = index.range_search(x[block], float(threshold))  # returns sim > threshold
        for offset, row in enumerate(block):
            if len(kept) >= limit:
                break
            neighbours = ids[lims[offset]:lims[offset + 1]]
            neighbour_sims = sims[lims[offset]:lims[offset + 1]]
            hit = is_kept[neighbours] & (neighbours != row)
            if hit.any():
                best = int(np.argmax(np.where(hit, neighbour_sims, -np.inf)))
                duplicate_of[row] = neighbours[best]
                similarity[row] = neighbour_sims[best]
            else:
                is_kept[row] = True
                kept.append(int(row))
    return FilterResult(np.asarray(kept, dtype=np.int64), duplicate_of, similarity)
