"""Cluster-based coresets over sentence embeddings.

- `kmeans_kcenter_coreset`: "Maybe Only 0.5% Data is Needed" (Chen et al. 2023): K-Means
  into K clusters, then k-center greedy inside each cluster with a budget proportional to
  the cluster's size.
- `deft_ucs`: DEFT-UCS (Das & Khetan 2023, unsupervised core-set selection for text
  editing, sampling after "Beyond neural scaling laws", Sorscher et al. 2022): K-Means
  (7 clusters in the paper), then per cluster the points closest to the centroid by cosine
  distance ("easy") and the farthest ("hard"); an optional base set D_base sampled
  stratified by cluster is forced in. Two forms of the per-cluster counts:
  - `per_cluster` (the paper's Algorithm 1): a fixed amount A per cluster, alpha·A easy and
    beta·A hard, alpha and beta chosen independently (rounded: round(alpha·A) easy and
    round((alpha + beta)·A) in all); a cluster with fewer points gives all it has (easy first),
    so the total is D_base + sum_c min(|c|, round((alpha + beta)·A)).
  - `proportional` (ours): cluster budget k·|c|/N (largest remainder), round(alpha·b_c)
    easy and the rest hard (beta = 1 - alpha), so the total is exactly k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    amount: int | None = None  # DEFT-UCS per_cluster sampling: the per-cluster amount A used


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
    return CoresetResult(
        indices, clusters.labels, clusters.centroids, budgets, np.full(indices.size, "kcenter"), distance
    )


def deft_ucs(
    x: np.ndarray,
    k: int | None = None,
    *,
    n_clusters: int = 7,
    alpha: float = 0.5,
    beta: float | None = None,
    per_cluster: int | None = None,
    sampling: Literal["per_cluster", "proportional"] = "per_cluster",
    base_size: int = 0,
    seed: int = 0,
) -> CoresetResult:
    """DEFT-UCS easy/hard sampling around K-Means centroids (see the module docstring).

    `per_cluster` sampling takes A = `per_cluster`, or, without it, an A whose full clusters fit
    the budget: A = floor((k - base_size) / (K·(alpha + beta))), lowered while rounding alpha·A
    and beta·A overshoots k. `beta` defaults
    to 1 - alpha; `proportional` sampling needs k and has beta = 1 - alpha by definition.
    `base_size` rows are first drawn uniformly within each cluster in proportion to its size
    (D_base); easy and hard rows come from the rest. `budgets` holds each cluster's easy+hard count.
    """
    beta = 1.0 - alpha if beta is None else beta
    if not (0.0 <= alpha <= 1.0 and 0.0 <= beta <= 1.0):
        raise ValueError(f"alpha and beta must be in [0, 1], got alpha={alpha}, beta={beta}")
    if sampling == "proportional" and abs(alpha + beta - 1.0) > 1e-9:
        raise ValueError(f"proportional sampling takes beta = 1 - alpha, got alpha={alpha}, beta={beta}")
    if k is None and (sampling == "proportional" or per_cluster is None):
        raise ValueError("give the budget k (or, for per_cluster sampling, `per_cluster`)")
    if base_size < 0 or (k is not None and base_size > k):
        raise ValueError(f"base_size must be in [0, k={k}], got {base_size}")
    clusters = kmeans(x, n_clusters, seed=seed)
    labels = clusters.labels
    n_found = clusters.centroids.shape[0]
    distance = cosine_distance_to_centroids(x, clusters.centroids, labels)
    rng = np.random.default_rng(seed)
    available = np.ones(x.shape[0], dtype=bool)
    picked: list[tuple[np.ndarray, str, np.ndarray]] = []
    if base_size:
        sizes = np.bincount(labels, minlength=n_found)
        for cluster, count in enumerate(proportional_budgets(sizes, base_size)):
            members = np.flatnonzero(labels == cluster)
            base = rng.choice(members, size=int(count), replace=False)
            available[base] = False
            picked.append((base, "base", np.full(base.size, np.nan)))
    remaining_sizes = np.bincount(labels[available], minlength=n_found)
    amount = 0
    if sampling == "proportional":
        assert k is not None
        budgets = proportional_budgets(remaining_sizes, k - base_size)
        n_easy = np.round(alpha * budgets).astype(np.int64)  # half to even, as Python's round
        n_hard = budgets - n_easy
    else:
        amount = per_cluster if per_cluster is not None else _amount_for_budget(k, base_size, n_found, alpha, beta)
        easy_count, hard_count = easy_hard_counts(amount, alpha, beta)
        if easy_count + hard_count < 1:
            raise ValueError(
                f"per-cluster amount A={amount} with alpha={alpha}, beta={beta} selects nothing "
                "(round((alpha + beta)·A) = 0): raise A (or the budget) or alpha/beta"
            )
        n_easy = np.minimum(easy_count, remaining_sizes)
        n_hard = np.minimum(hard_count, remaining_sizes - n_easy)
        budgets = n_easy + n_hard
    for cluster in np.flatnonzero(budgets):
        members = np.flatnonzero((labels == cluster) & available)
        order = members[np.argsort(distance[members], kind="stable")]  # closest first
        easy = order[: n_easy[cluster]]
        hard = order[::-1][: n_hard[cluster]]  # disjoint from easy: n_easy + n_hard <= cluster size
        picked.append((easy, "easy", distance[easy]))
        picked.append((hard, "hard", distance[hard]))
    indices = np.concatenate([p[0] for p in picked]) if picked else np.empty(0, np.int64)
    roles = np.concatenate([np.full(p[0].size, p[1]) for p in picked]) if picked else np.empty(0, str)
    dists = np.concatenate([p[2] for p in picked]) if picked else np.empty(0)
    return CoresetResult(
        indices.astype(np.int64),
        labels,
        clusters.centroids,
        budgets,
        roles,
        dists,
        amount if sampling == "per_cluster" else None,
    )


def easy_hard_counts(amount: int, alpha: float, beta: float) -> tuple[int, int]:
    """(easy, hard) rows of a full cluster: round(alpha·A) easy and round((alpha + beta)·A) in all,
    so the rounding never loses a row (A = 13, alpha = beta = 0.5: 6 + 7, not 6 + 6)."""
    easy = round(alpha * amount)
    return easy, max(round((alpha + beta) * amount) - easy, 0)


def _amount_for_budget(k: int | None, base_size: int, n_clusters: int, alpha: float, beta: float) -> int:
    """The paper's A for a total budget: floor((k - base) / (K·(alpha+beta))), lowered until
    base + K·round((alpha + beta)·A) <= k."""
    assert k is not None
    share = alpha + beta
    amount = int(np.floor((k - base_size) / (n_clusters * share))) if share > 0 else 0
    while amount > 0 and base_size + n_clusters * sum(easy_hard_counts(amount, alpha, beta)) > k:
        amount -= 1  # rounding (alpha + beta)·A up can overshoot by one per cluster
    if sum(easy_hard_counts(amount, alpha, beta)) < 1:
        raise ValueError(
            f"a budget of {k} (base {base_size}) leaves no per-cluster amount A >= 1 over "
            f"{n_clusters} clusters with alpha + beta = {share:g}: raise the budget or give `per_cluster`"
        )
    return amount


def cosine_distance_to_centroids(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 - cos(x_i, centroid of its cluster)."""
    x = np.asarray(x, dtype=np.float32)
    c = centroids[labels]
    num = np.einsum("ij,ij->i", x, c)
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(c, axis=1)
    return 1.0 - num / np.maximum(den, 1e-12)
