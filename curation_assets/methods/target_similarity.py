"""Representation-based target-aware selection: mean cosine similarity to a target set.

The baseline LESS (Xia et al. 2024, "LESS: Selecting Influential Data for Targeted
Instruction Tuning", §5 "representation-based data selection") compares against: embed the
pool and the target validation samples with one sentence encoder and rank each pool sample by
its mean cosine similarity to the target's validation samples. As for LESS, the mean is taken
per target subtask and a sample's score is its best subtask's mean.

mean_j cos(x, t_j) = x̂ · mean_j t̂_j, so the score is one matrix product with the mean of the
unit target vectors: O(n·d), not O(n·m·d).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def unit_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def mean_cosine_similarity(
    pool: np.ndarray, targets: np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(score per pool sample = max over subtasks, {subtask: mean cosine to its target samples}).

    pool (n, d) and targets (m, d) need not be normalised; `labels` names each target row's subtask.
    """
    if targets.shape[0] == 0:
        raise ValueError("no target samples to compare with")
    if targets.shape[0] != len(labels):
        raise ValueError(f"{targets.shape[0]} target vectors but {len(labels)} labels")
    if pool.shape[1] != targets.shape[1]:
        raise ValueError(f"pool vectors have {pool.shape[1]} dimensions, target vectors {targets.shape[1]}")
    names = sorted(set(labels))
    index = np.array([names.index(label) for label in labels])
    unit_targets = unit_rows(targets)
    centroids = np.zeros((len(names), targets.shape[1]))
    np.add.at(centroids, index, unit_targets)
    centroids /= np.bincount(index, minlength=len(names))[:, None]
    per_subtask = unit_rows(pool) @ centroids.T  # (n, subtasks): mean of the cosines = cosine-sum / m
    scores = per_subtask.max(axis=1) if per_subtask.size else np.zeros(pool.shape[0])
    return scores, {name: per_subtask[:, j] for j, name in enumerate(names)}
