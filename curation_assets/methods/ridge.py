"""Ridge regression (Hoerl & Kennard 1970) with an unpenalised intercept and the penalty
chosen by exact leave-one-out error, computed for every candidate from one SVD
(the hat-matrix identity e_i = (y_i - ŷ_i) / (1 - h_ii); Golub, Heath & Wahba 1979).

The light regression head the trained scorers put on sentence embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-4, 4, 17))


@dataclass(frozen=True)
class RidgeHead:
    weights: np.ndarray  # (d,)
    bias: float
    alpha: float
    loo_mse: float  # leave-one-out mean squared error at `alpha`

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.weights + self.bias


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = DEFAULT_ALPHAS) -> RidgeHead:
    """min_w,b ||y - Xw - b||² + alpha·||w||², alpha from `alphas` by leave-one-out MSE.

    Cost O(n·d·min(n, d)) for the SVD, then O(n·min(n, d)) per alpha.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"fit_ridge needs x (n, d) and y (n,), got {x.shape} and {y.shape}")
    if x.shape[0] < 3:
        raise ValueError(f"fit_ridge needs at least 3 labelled rows, got {x.shape[0]}")
    if not alphas or min(alphas) <= 0:
        raise ValueError("alphas must be positive")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("fit_ridge got non-finite features or labels")
    n = x.shape[0]
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    uty = u.T @ yc
    s2 = s * s
    best: tuple[float, float] | None = None
    for alpha in alphas:
        shrink = s2 / (s2 + alpha)
        fitted = u @ (shrink * uty)
        leverage = 1.0 / n + (u * u) @ shrink  # diagonal of the hat matrix, intercept included
        loo = (yc - fitted) / np.maximum(1.0 - leverage, 1e-12)
        mse = float(np.mean(loo * loo))
        if best is None or mse < best[1]:
            best = (float(alpha), mse)
    assert best is not None
    alpha, mse = best
    weights = vt.T @ ((s / (s2 + alpha)) * uty)
    return RidgeHead(weights, float(y_mean - x_mean @ weights), alpha, mse)
