"""Instruction Mining (Cao et al. 2023, "Instruction Mining: Instruction Data Selection for
Tuning Large Language Models"): natural-language indicators of each sample, averaged over
random subsets, and a linear rule fitted by least squares from those subset means to the
validation loss of a model fine-tuned on each subset. The paper fits the log of the loss:
log L(M_ft, D_eval) ≈ β0 + Σ_j β_j · I_j; lower predicted loss = better data.

Because the rule is linear, the rule applied to a subset's mean indicators equals the mean of
the rule applied to each of its samples, so ranking samples by their own predicted loss is
consistent with the subset-level fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def knn_mean_distance(pool: np.ndarray, queries: np.ndarray, k: int = 6, block: int = 4096) -> np.ndarray:
    """KNN-i: mean Euclidean distance from each pool row `queries[q]` to its k nearest *other*
    pool rows (the paper's KNN-6 over sentence embeddings). Exact (faiss IndexFlatL2)."""
    import faiss

    x = np.ascontiguousarray(pool, dtype=np.float32)
    if x.shape[0] <= k:
        raise ValueError(f"kNN-{k} needs more than {k} samples, the pool has {x.shape[0]}")
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    queries = np.asarray(queries, dtype=np.int64)
    out = np.empty(queries.size)
    for start in range(0, queries.size, block):
        rows = queries[start : start + block]
        squared, labels = index.search(x[rows], k + 1)
        other = labels != rows[:, None]
        other[other.all(axis=1), -1] = False  # itself not returned (ties at distance 0): drop the farthest
        distances = np.sqrt(np.maximum(squared, 0.0))[other].reshape(rows.size, k)
        out[start : start + block] = distances.mean(axis=1)
    return out


def random_subsets(pool_size: int, n_subsets: int, size: int, seed: int) -> list[np.ndarray]:
    """`n_subsets` independent uniform draws of `size` distinct rows (sorted), numpy PCG64 seeded."""
    if not 0 < size <= pool_size:
        raise ValueError(f"subset size must be in [1, {pool_size}] (the pool), got {size}")
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(pool_size, size=size, replace=False)) for _ in range(n_subsets)]


def subset_means(indicators: np.ndarray, subsets: Sequence[np.ndarray]) -> np.ndarray:
    """(subsets x indicators) means over each subset's rows, ignoring missing (NaN) values."""
    means = np.full((len(subsets), indicators.shape[1]), np.nan)
    for r, rows in enumerate(subsets):
        values = indicators[rows]
        counts = (~np.isnan(values)).sum(axis=0)
        sums = np.nansum(values, axis=0)
        means[r] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means


@dataclass(frozen=True)
class LinearRule:
    """y ≈ intercept + x · coefficients, fitted on standardised indicators and reported in both scales."""

    names: tuple[str, ...]
    intercept: float  # in raw indicator units
    coefficients: np.ndarray  # per indicator, raw units
    standardised_intercept: float  # = mean of y
    standardised_coefficients: np.ndarray  # per indicator, per standard deviation of its subset means
    means: np.ndarray  # of the subset means (standardisation)
    stds: np.ndarray
    std_errors: np.ndarray  # of the raw coefficients (nan without residual degrees of freedom)
    t_values: np.ndarray
    p_values: np.ndarray  # two-sided, Student t with n - p - 1 degrees of freedom
    r_squared: float
    adjusted_r_squared: float
    rmse: float
    n_observations: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + np.asarray(x, dtype=np.float64) @ self.coefficients


def fit_linear_rule(x: np.ndarray, y: np.ndarray, names: Sequence[str]) -> LinearRule:
    """Ordinary least squares with an intercept (numpy lstsq) of y on the columns of x.

    Columns are standardised over the observations first (better conditioning, comparable
    coefficients); predictions are the same as an unstandardised fit.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, p = x.shape
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("the least-squares fit got missing values")
    if n < p + 1:
        raise ValueError(
            f"{n} observations cannot determine {p} coefficients and an intercept; "
            f"use at least {p + 1} subsets (more, to measure the fit)"
        )
    means, stds = x.mean(axis=0), x.std(axis=0)
    constant = [name for name, s in zip(names, stds) if s == 0]
    if constant:
        raise ValueError(f"indicators constant over the subsets (no information for the fit): {constant}")
    design = np.column_stack([np.ones(n), (x - means) / stds])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ beta
    ss_res = float(residuals @ residuals)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r_squared = 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    dof = n - p - 1
    adjusted = 1 - (1 - r_squared) * (n - 1) / dof if dof > 0 else float("nan")
    if dof > 0:
        from scipy import stats

        covariance = ss_res / dof * np.linalg.pinv(design.T @ design)
        std_errors = np.sqrt(np.maximum(np.diag(covariance)[1:], 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_values = beta[1:] / std_errors
        p_values = 2 * stats.t.sf(np.abs(t_values), dof)
    else:
        std_errors = t_values = p_values = np.full(p, np.nan)
    coefficients = beta[1:] / stds
    return LinearRule(
        tuple(names),
        float(beta[0] - coefficients @ means),
        coefficients,
        float(beta[0]),
        beta[1:],
        means,
        stds,
        std_errors / stds,
        t_values,
        p_values,
        r_squared,
        adjusted,
        float(np.sqrt(ss_res / n)),
        n,
    )
