"""K-Means with faiss, and budgets split across clusters in proportion to their sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray  # (K, d) float32
    labels: np.ndarray  # (n,) int64 cluster of each row


def kmeans(x: np.ndarray, n_clusters: int, *, seed: int = 0, n_iter: int = 20, spherical: bool = False) -> KMeansResult:
    """faiss K-Means (k-means++ is not used by faiss: random init from `seed`); labels by nearest centroid."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n_clusters = min(n_clusters, x.shape[0])
    model = faiss.Kmeans(
        x.shape[1],
        n_clusters,
        niter=n_iter,
        seed=seed,
        spherical=spherical,
        max_points_per_centroid=max(256, x.shape[0] // max(n_clusters, 1) + 1),
        verbose=False,
    )
    model.train(x)
    _, labels = model.index.search(x, 1)
    assert model.centroids is not None  # set by train()
    return KMeansResult(model.centroids.copy(), labels[:, 0].astype(np.int64))


def proportional_budgets(sizes: np.ndarray, k: int) -> np.ndarray:
    """Split k over groups in proportion to size (largest-remainder rounding); sums to min(k, Σsizes)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    k = min(k, total)
    if total == 0 or k == 0:
        return np.zeros_like(sizes)
    exact = k * sizes / total  # <= sizes because k <= total
    budgets = np.floor(exact).astype(np.int64)
    deficit = k - int(budgets.sum())  # = Σ remainders < number of groups with a remainder
    by_remainder = np.argsort(-(exact - budgets), kind="stable")
    budgets[by_remainder[:deficit]] += 1
    return budgets
