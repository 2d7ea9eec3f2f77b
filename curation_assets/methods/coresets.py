"""Cluster-based coresets over sentence embeddings.

- `kmeans_kcenter_coreset`: "Maybe Only 0.5% Data is Needed" (Chen et al. 2023): K-Means
  into K clusters, then k-center greedy inside each cluster with a budget proportional to
  the cluster's size.
- `deft_ucs`: DEFT-UCS (Das & Khetan 2023, unsupervised core-set selection for text
  editing, sampling after "Beyond neural scaling laws", Sorscher et al. 2022): K-Means
  (7 clusters in the paper), per-cluster budget k·|c|/N, of which a fraction alpha are the
  points closest to the centroid by cosine distance ("easy") and the rest the farthest
  ("hard"); an optional base set D_base sampled stratified by cluster is forced in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation_assets.methods.clustering import kmeans, proportional_budgets
from curation_assets.methods.kcenter import k_center_greedy


@dataclass(frozen=True)
class CoresetResult:
    indices: np.ndarray  # selected rows, in selection order
    labels: np.ndarray  # cluster of every row
    centroids: np.ndarray  # (K, d)
    budgets: np.ndarray  # per-cluster budget
    role: np.ndarray  # per selected row: "kcenter" | "easy" | "hard" | "base"
    distance: np.ndarray  # per selected row: distance used to pick it (nan for base)


def kmeans_kcenter_coreset(x: np.ndarray, k: int, n_clusters: int, *, seed: int = 0) -> CoresetResult:
    clusters = kmeans(x, n_clusters, seed=seed)
    sizes = np.bincount(clusters.labels, minlength=clusters.centroids.shape[0])
    budgets = proportional_budgets(sizes, k)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    radii: list[np.ndarray] = []
    for cluster in np.flatnonzero(budgets):
        members = np.flatnonzero(clusters.labels == cluster)
        result = k_center_greedy(x[members], int(budgets[cluster]), rng=rng)
        chosen.append(members[result.indices])
        radii.append(result.radii)
    indices = np.concatenate(chosen) if chosen else np.empty(0, np.int64)
    distance = np.concatenate(radii) if radii else np.empty(0)
    return CoresetResult(indices, clusters.labels, clusters.centroids, budgets, np.full(indices.size, "kcenter"), distance)


def deft_ucs(x: np.ndarray, k: int, *, n_clusters: int = 7, alpha: float = 0.5, base_size: int = 0,
             seed: int = 0) -> CoresetResult:
    """DEFT-UCS: per cluster, alpha·b_c closest to the centroid plus (1-alpha)·b_c farthest.

    `base_size` rows are first drawn uniformly within each cluster in proportion to its size
    (D_base) and count towards k; the rest of the budget is split over the remaining rows.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0 <= base_size <= k:
        raise ValueError(f"base_size must be in [0, k={k}], got {base_size}")
    clusters = kmeans(x, n_clusters, seed=seed)
    labels = clusters.labels
    distance = cosine_distance_to_centroids(x, clusters.centroids, labels)
    rng = np.random.default_rng(seed)
    available = np.ones(x.shape[0], dtype=bool)
    picked: list[tuple[np.ndarray, str, np.ndarray]] = []
    if base_size:
        sizes = np.bincount(labels, minlength=clusters.centroids.shape[0])
        for cluster, count in enumerate(proportional_budgets(sizes, base_size)):
            members = np.flatnonzero(labels == cluster)
            base = rng.choice(members, size=int(count), replace=False)
            available[base] = False
            picked.append((base, "base", np.full(base.size, np.nan)))
    remaining_sizes = np.bincount(labels[available], minlength=clusters.centroids.shape[0])
    budgets = proportional_budgets(remaining_sizes, k - base_size)
    for cluster in np.flatnonzero(budgets):
        members = np.flatnonzero((labels == cluster) & available)
        order = members[np.argsort(distance[members], kind="stable")]  # closest first
        budget = int(budgets[cluster])
        n_easy = int(round(alpha * budget))
        easy = order[:n_easy]
        hard = order[::-1][: budget - n_easy]
        picked.append((easy, "easy", distance[easy]))
        picked.append((hard, "hard", distance[hard]))
    indices = np.concatenate([p[0] for p in picked]) if picked else np.empty(0, np.int64)
    roles = np.concatenate([np.full(p[0].size, p[1]) for p in picked]) if picked else np.empty(0, str)
    dists = np.concatenate([p[2] for p in picked]) if picked else np.empty(0)
    return CoresetResult(indices.astype(np.int64), labels, clusters.centroids, budgets, roles, dists)


def cosine_distance_to_centroids(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 - cos(x_i, centroid of its cluster)."""
    x = np.asarray(x, dtype=np.float32)
    c = centroids[labels]
    num = np.einsum("ij,ij->i", x, c)
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(c, axis=1)
    return 1.0 - num / np.maximum(den, 1e-12)
