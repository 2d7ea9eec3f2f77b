"""k-center greedy coreset (Sener & Savarese 2018, "Active Learning for Convolutional
Neural Networks: A Core-Set Approach"; used by "Maybe only 0.5% data is needed" and MoDS).

Start from the seed centres (or one random point); repeatedly add the point farthest
from its nearest chosen centre. Euclidean distance. Memory O(n) beyond the input (which
may be a memmap), plus a pool of a few thousand rows.

The picks are those of the plain algorithm (every row's min-distance updated after every
pick), computed lazily so that x is not read once per pick:

- New centres wait (up to `_BATCH`) and are then applied to every row together, one
  matrix-matrix product per block of rows: one pass over x serves many centres.
- A row's distance as of its last update is an upper bound of its current one (distances
  only shrink), so only rows whose bound is near the top can be the next pick. Those rows
  (the pool) are kept current with each new centre; when the best current value in the
  pool falls to the pool's admission threshold, the pool is re-formed from the next rows
  by bound (lazy evaluation as in the accelerated greedy of Minoux 1978).
- Float32 products carry a rounding error below `tol` (a bound, not an estimate); when
  more than one row lies within that margin of the maximum, their distances are
  recomputed exactly in float64 from the original rows and ties go to the lowest index,
  as numpy argmax does on exact distances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from threadpoolctl import ThreadpoolController

_BLOCK_ROWS = 65_536  # rows read from x at a time: bounds temporaries for memmapped inputs
_CHUNK_ROWS = 4_096  # rows per matrix product inside a block: keeps the products in cache
_BATCH = 128  # at most this many centres wait for one pass over x
_POOL_ROWS = 2_048  # rows kept up to date between passes (the top ones by stale distance)
_POOL_LIMIT = 4  # a pool needing more than _POOL_LIMIT·_POOL_ROWS rows triggers a full pass
_THREADED_PASS = 32  # passes with at least this many centres use the caller's BLAS threads
_UNIT_ROUNDOFF = float(np.finfo(np.float32).eps) / 2


@dataclass(frozen=True)
class KCenterResult:
    indices: np.ndarray  # chosen centres in pick order (seeds first)
    radii: np.ndarray  # for each pick, the distance it had to its nearest earlier centre (inf for the first)
    coverage_radius: float  # max distance of any point to its nearest centre after the last pick


def k_center_greedy(
    x: np.ndarray, k: int, *, seed_idx: Sequence[int] = (), rng: np.random.Generator | None = None
) -> KCenterResult:
    """Choose k centres greedily; seeds count towards k and are returned first.

    Ties (equal distances) go to the lowest index, as numpy argmax does. While it runs, the
    process's OpenBLAS/MKL thread count is lowered to one except during large full passes.
    """
    n = x.shape[0]
    seeds = np.asarray(list(dict.fromkeys(int(i) for i in seed_idx)), dtype=np.int64)  # dedupe, keep order
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, {n}], got {k}")
    if seeds.size and (seeds.min() < 0 or seeds.max() >= n):
        raise ValueError("seed index out of range")
    if k == 0:
        return KCenterResult(np.empty(0, np.int64), np.empty(0), float("inf"))
    if seeds.size == 0:
        rng = rng or np.random.default_rng(0)
        seeds = np.array([int(rng.integers(n))])
    # The per-pick work is small products: one BLAS thread (more cost more than they give, and
    # stall badly on a busy machine); large full passes use the caller's BLAS threads.
    pass_threads = max((pool["num_threads"] for pool in _blas().select(user_api="blas").info()), default=1)
    with _blas().limit(limits=1, user_api="blas"):
        cover = _LazyCoverage(x, pass_threads)
        radii: list[float] = []
        for centre in seeds[:k].tolist():
            radii.append(float(np.sqrt(cover.value(centre))))
            cover.add(centre)
        while len(cover.centres) < k:
            best, value = cover.farthest()
            radii.append(float(np.sqrt(value)))
            cover.add(best)
        coverage = float(np.sqrt(cover.max_value()))
    return KCenterResult(np.asarray(cover.centres, dtype=np.int64), np.asarray(radii), coverage)


@cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


class _LazyCoverage:
    """Each row's squared distance to its nearest centre, brought up to date lazily.

    `stale[i]`: an upper bound, the squared distance to the nearest of the centres applied
    to row i so far (-inf once i is a centre). `pending`: centres added since the last full
    pass. Pool invariant: every row that is not a centre and has stale >= `floor` is in the
    pool, where `pool_value` is current (float32 products, all centres applied) and
    `pool_exact` is the float64 value from the original rows, or nan until needed.
    """

    def __init__(self, x: np.ndarray, pass_threads: int) -> None:
        self.x = x
        self.pass_threads = pass_threads
        self.sq_norms = _row_sq_norms(x)
        # Bound on the float32 error of ||a||² + ||b||² - 2a·b (each of the three terms a sum of
        # d products: d·u·R², d·u·R², 2·d·u·R²), plus the float32 cast of float64 inputs and the
        # float32 additions, with a 2x margin.
        max_sq = float(self.sq_norms.max()) if self.sq_norms.size else 0.0
        self.tol = 2.0 * (4 * x.shape[1] + 16) * _UNIT_ROUNDOFF * max_sq
        self.stale = np.full(x.shape[0], np.inf)
        self.centres: list[int] = []
        self.pending: list[int] = []
        self.floor = np.inf
        self.in_pool = np.zeros(x.shape[0], dtype=bool)
        self.pool_idx = np.empty(0, np.int64)
        self.pool_rows = np.empty((0, x.shape[1]), np.float32)
        self.pool_value = np.empty(0)
        self.pool_exact = np.empty(0)

    def value(self, i: int) -> float:
        """Current squared distance of row i to its nearest centre."""
        current = _nearest_sq(self._rows([i]), self.sq_norms[[i]], *self._pending_vectors())[0]
        return float(min(self.stale[i], current))

    def add(self, centre: int) -> None:
        self.centres.append(centre)
        self.pending.append(centre)
        self.stale[centre] = -np.inf
        if self.pool_idx.size:
            d = _nearest_sq(self.pool_rows, self.sq_norms[self.pool_idx], self._rows([centre]), self.sq_norms[[centre]])
            np.minimum(self.pool_value, d, out=self.pool_value)
            known = np.flatnonzero(self.pool_exact > -np.inf)  # nan compares False
            if known.size:
                self.pool_exact[known] = np.minimum(self.pool_exact[known], self._exact_pair_sq(known, centre))
            hit = self.pool_idx == centre
            self.pool_value[hit] = self.pool_exact[hit] = -np.inf
        if len(self.pending) >= _BATCH or len(self.centres) == 1:  # the first pass gives every row a bound
            self._full_pass()

    def farthest(self) -> tuple[int, float]:
        """The row farthest from its nearest centre, and its squared distance."""
        while True:
            best = float(self.pool_value.max()) if self.pool_idx.size else -np.inf
            if best - 2 * self.tol >= self.floor:  # no row outside the pool can reach the maximum
                break
            if not self._reform_pool(best - 2 * self.tol):
                self._full_pass()
        near = np.flatnonzero(self.pool_value >= best - 2 * self.tol)
        if near.size == 1:
            pick = int(near[0])
            exact = self.pool_exact[pick]
            return int(self.pool_idx[pick]), float(best if np.isnan(exact) else exact)
        self._fill_exact(near)
        near = near[np.argsort(self.pool_idx[near], kind="stable")]
        pick = int(near[np.argmax(self.pool_exact[near])])  # first of the exact maxima: lowest index
        return int(self.pool_idx[pick]), float(self.pool_exact[pick])

    def max_value(self) -> float:
        """Largest squared distance of any row to its nearest centre (0 once all rows are centres)."""
        if len(self.centres) == self.x.shape[0]:
            return 0.0
        return max(self.farthest()[1], 0.0)

    def _full_pass(self) -> None:
        centres, centre_sq = self._pending_vectors()
        threads = self.pass_threads if len(self.pending) >= _THREADED_PASS else 1  # else memory-bound
        with _blas().limit(limits=threads, user_api="blas"):
            for start in range(0, self.x.shape[0], _BLOCK_ROWS):
                block = np.asarray(self.x[start : start + _BLOCK_ROWS], dtype=np.float32)
                rows = slice(start, start + block.shape[0])
                np.minimum(
                    self.stale[rows], _nearest_sq(block, self.sq_norms[rows], centres, centre_sq), out=self.stale[rows]
                )
        self.pending = []
        self._reform_pool(None, limit=False)

    def _reform_pool(self, needed_floor: float | None, limit: bool = True) -> bool:
        """Re-form the pool from the top `_POOL_ROWS` rows by stale value, or down to
        `needed_floor` if lower (None: 2·tol below the top). Rows leaving the pool keep their
        current value as stale. Returns False, changing nothing but stale, when centres are
        pending and the pool would outgrow `_POOL_LIMIT`·`_POOL_ROWS` rows (a full pass is
        then cheaper)."""
        self.stale[self.pool_idx] = self.pool_value  # current values: tighter bounds, all centres applied
        open_rows = np.isfinite(self.stale)
        open_stale = self.stale[open_rows]
        if needed_floor is None:
            needed_floor = float((float(open_stale.max()) if open_stale.size else -np.inf) - 2 * self.tol)
        floor = min(_kth_largest(open_stale, _POOL_ROWS), needed_floor)
        members = open_rows & (self.stale >= floor)
        if limit and self.pending and np.count_nonzero(members) > _POOL_LIMIT * _POOL_ROWS:
            return False
        stay = self.pool_value >= floor
        new = np.flatnonzero(members & ~self.in_pool)
        rows = self._rows(new)
        value = np.minimum(self.stale[new], _nearest_sq(rows, self.sq_norms[new], *self._pending_vectors()))
        self.in_pool[self.pool_idx[~stay]] = False
        self.in_pool[new] = True
        self.pool_idx = np.concatenate([self.pool_idx[stay], new])
        self.pool_rows = np.concatenate([self.pool_rows[stay], rows])
        self.pool_value = np.concatenate([self.pool_value[stay], value])
        self.pool_exact = np.concatenate([self.pool_exact[stay], np.full(new.size, np.nan)])
        self.floor = floor
        return True

    def _fill_exact(self, positions: np.ndarray) -> None:
        unknown = positions[np.isnan(self.pool_exact[positions])]
        if unknown.size:
            self.pool_exact[unknown] = self._exact_sq(self.pool_idx[unknown])

    def _exact_sq(self, candidates: np.ndarray) -> np.ndarray:
        """Float64 squared distance of each candidate row to its nearest centre, from the original
        rows; float32 products shortlist the centres within 2·tol of the nearest one."""
        centre_idx = np.asarray(self.centres, dtype=np.int64)
        centres = self._rows(centre_idx)
        out = np.empty(candidates.size)
        step = max(1, 4_000_000 // centre_idx.size)
        for start in range(0, candidates.size, step):
            part = candidates[start : start + step]
            approx = (
                self.sq_norms[part][:, None] + self.sq_norms[centre_idx][None, :] - 2.0 * (self._rows(part) @ centres.T)
            )
            rows, cols = np.nonzero(approx <= approx.min(axis=1, keepdims=True) + 2 * self.tol)
            diff = np.asarray(self.x[part[rows]], dtype=np.float64) - np.asarray(
                self.x[centre_idx[cols]], dtype=np.float64
            )
            best = np.full(part.size, np.inf)
            np.minimum.at(best, rows, np.einsum("ij,ij->i", diff, diff))
            out[start : start + part.size] = best
        return out

    def _exact_pair_sq(self, positions: np.ndarray, centre: int) -> np.ndarray:
        """Float64 squared distance of the pool rows at `positions` to one centre."""
        diff = np.asarray(self.x[self.pool_idx[positions]], dtype=np.float64) - np.asarray(
            self.x[centre], dtype=np.float64
        )
        return np.einsum("ij,ij->i", diff, diff)

    def _pending_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        return self._rows(self.pending), self.sq_norms[self.pending]

    def _rows(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            return np.empty((0, self.x.shape[1]), np.float32)
        return np.asarray(self.x[idx], dtype=np.float32).reshape(idx.size, -1)


def _kth_largest(values: np.ndarray, k: int) -> float:
    """The k-th largest value (-inf when there are at most k)."""
    if values.size <= k:
        return -np.inf
    return float(np.partition(values, values.size - k)[values.size - k])


def _nearest_sq(rows: np.ndarray, rows_sq: np.ndarray, centres: np.ndarray, centres_sq: np.ndarray) -> np.ndarray:
    """min over centres of ||row - centre||², via ||row||² - 2 row·c + ||c||² (float32 products)."""
    out = np.full(rows.shape[0], np.inf)
    if centres.shape[0] == 0:
        return out
    if centres.shape[0] == 1:  # matrix-vector product: the fast path for a single centre
        out[:] = rows @ centres[0]
        out *= -2.0
        out += centres_sq[0] + rows_sq
        return np.maximum(out, 0.0, out=out)
    centres_t = np.ascontiguousarray(centres.T)
    centres_sq32 = centres_sq.astype(np.float32)
    for start in range(0, rows.shape[0], _CHUNK_ROWS):
        products = rows[start : start + _CHUNK_ROWS] @ centres_t
        products *= -2.0
        products += centres_sq32
        out[start : start + products.shape[0]] = products.min(axis=1)
    out += rows_sq
    np.maximum(out, 0.0, out=out)
    return out


def _row_sq_norms(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        block = np.asarray(x[start : start + _BLOCK_ROWS], dtype=np.float32)
        out[start : start + block.shape[0]] = np.einsum("ij,ij->i", block, block)
    return out
