"""Statistics of a selection-quality evaluation (issue #19): a paired bootstrap interval of a
loss difference over held-out samples, and a token-matched random subset.

Paired bootstrap (Efron & Tibshirani 1993, percentile interval; Koehn 2004 for paired
resampling of test items): the per-sample differences d_i = loss_method(i) - loss_ref(i) are
resampled with replacement B times; the interval is the 2.5th and 97.5th percentile of the
resampled means. Pairing removes the between-sample variance both models share.

Token-matched random: a seeded permutation of the pool, cut where the running total of
response tokens comes closest to the method's total, so a method is compared with random
data of the same training-token budget ("more tokens" is not "better tokens").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK_CELLS = 4_000_000  # resample indices held at once (32 MB of int64)


@dataclass(frozen=True)
class PairedDelta:
    delta: float  # mean of the per-sample differences
    low: float  # percentile interval of the bootstrap means
    high: float
    n: int  # samples with a finite difference


def paired_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b on the samples where both are finite (a sample without response tokens has NaN)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need two vectors of one length, got {a.shape} and {b.shape}")
    return (a - b)[np.isfinite(a) & np.isfinite(b)]


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, resamples: int = 2_000, seed: int = 0, level: float = 0.95
) -> PairedDelta:
    """Mean of a - b over samples finite in both, with a paired percentile bootstrap interval.
    Resample r draws its n indices as `default_rng(seed).integers(0, n, size=n)` would in turn."""
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    d = paired_differences(a, b)
    if d.size == 0:
        return PairedDelta(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    rows = max(1, _CHUNK_CELLS // d.size)
    for start in range(0, resamples, rows):
        count = min(rows, resamples - start)
        means[start : start + count] = d[rng.integers(0, d.size, size=(count, d.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return PairedDelta(float(d.mean()), float(low), float(high), int(d.size))


def token_matched_subset(tokens: np.ndarray, total: int, seed: int) -> np.ndarray:
    """Indices (in draw order) of the shortest prefix of a seeded permutation of the pool whose
    token sum is closest to `total`."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.size == 0:
        raise ValueError("token matching needs a non-empty pool")
    order = np.random.default_rng(seed).permutation(tokens.size)
    running = np.concatenate([[0], np.cumsum(tokens[order])])
    length = int(np.argmin(np.abs(running[1:] - total))) + 1  # argmin: the first of equally close prefixes
    return order[:length]
