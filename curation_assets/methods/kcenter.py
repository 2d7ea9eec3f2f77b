"""k-center greedy coreset (Sener & Savarese 2018, "Active Learning for Convolutional
Neural Networks: A Core-Set Approach"; used by "Maybe only 0.5% data is needed" and MoDS).

Start from the seed centres (or one random point); repeatedly add the point farthest
from its nearest chosen centre and update every point's nearest-centre distance with
the new centre. Euclidean distance. Cost O(n·k·d) in batched matrix-vector products,
memory O(n) beyond the input (which may be a memmap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_BLOCK_ROWS = 65_536  # rows per distance update: bounds temporaries for memmapped inputs


@dataclass(frozen=True)
class KCenterResult:
    indices: np.ndarray  # chosen centres in pick order (seeds first)
    radii: np.ndarray  # for each pick, the distance it had to its nearest earlier centre (inf for the first)
    coverage_radius: float  # max distance of any point to its nearest centre after the last pick


def k_center_greedy(x: np.ndarray, k: int, *, seed_idx: Sequence[int] = (),
                    rng: np.random.Generator | None = None) -> KCenterResult:
    """Choose k centres greedily; seeds count towards k and are returned first.

    Ties (equal distances) go to the lowest index, as numpy argmax does.
    """
    n = x.shape[0]
    seeds = np.asarray(list(dict.fromkeys(int(i) for i in seed_idx)), dtype=np.int64)  # dedupe, keep order
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, {n}], got {k}")
    if seeds.size and (seeds.min() < 0 or seeds.max() >= n):
        raise ValueError("seed index out of range")
    if k == 0:
        return KCenterResult(np.empty(0, np.int64), np.empty(0), float("inf"))
    sq_norms = _row_sq_norms(x)
    min_sq = np.full(n, np.inf, dtype=np.float64)
    picks: list[int] = []
    radii: list[float] = []
    if seeds.size == 0:
        rng = rng or np.random.default_rng(0)
        seeds = np.array([int(rng.integers(n))])
    for centre in [int(s) for s in seeds[:k]]:
        radii.append(float(np.sqrt(min_sq[centre])))
        _update(x, sq_norms, centre, min_sq)
        picks.append(centre)
    while len(picks) < k:
        best = int(np.argmax(min_sq))
        radii.append(float(np.sqrt(min_sq[best])))
        _update(x, sq_norms, best, min_sq)
        picks.append(best)
    min_sq[picks] = 0.0
    return KCenterResult(np.asarray(picks, dtype=np.int64), np.asarray(radii),
                         float(np.sqrt(max(min_sq.max(), 0.0))))


def _row_sq_norms(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        block = np.asarray(x[start:start + _BLOCK_ROWS], dtype=np.float32)
        out[start:start + block.shape[0]] = np.einsum("ij,ij->i", block, block, dtype=np.float64)
    return out


def _update(x: np.ndarray, sq_norms: np.ndarray, centre: int, min_sq: np.ndarray) -> None:
    """min_sq = min(min_sq, ||x - x[centre]||²), via ||x||² - 2 x·c + ||c||² in blocks."""
    c = np.asarray(x[centre], dtype=np.float32)
    c_sq = sq_norms[centre]
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        block = np.asarray(x[start:start + _BLOCK_ROWS], dtype=np.float32)
        d = sq_norms[start:start + block.shape[0]] - 2.0 * (block @ c) + c_sq
        np.maximum(d, 0.0, out=d)
        if start <= centre < start + d.shape[0]:
            d[centre - start] = -np.inf  # a chosen centre is never picked again, even among duplicates
        np.minimum(min_sq[start:start + block.shape[0]], d, out=min_sq[start:start + block.shape[0]])
