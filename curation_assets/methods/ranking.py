"""Ranking baselines: seeded uniform sampling and top-k by a score."""

from __future__ import annotations

import numpy as np


def random_subset(pool_size: int, k: int, seed: int) -> np.ndarray:
    """k distinct indices drawn uniformly without replacement, in draw order (numpy PCG64 seeded)."""
    if not 0 <= k <= pool_size:
        raise ValueError(f"k must be in [0, {pool_size}], got {k}")
    return np.random.default_rng(seed).choice(pool_size, size=k, replace=False)


def top_k(scores: np.ndarray, k: int, *, descending: bool = True) -> np.ndarray:
    """Indices of the k best scores, best first; NaN scores rank last; ties keep input order."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 <= k <= scores.shape[0]:
        raise ValueError(f"k must be in [0, {scores.shape[0]}], got {k}")
    key = -scores if descending else scores.copy()
    key[np.isnan(key)] = np.inf
    return np.argsort(key, kind="stable")[:k]
