"""LESS (Xia et al. 2024, "LESS: Selecting Influential Data for Targeted Instruction Tuning").

Training samples are represented by Adam-preconditioned LoRA gradients at each warm-up
checkpoint, target validation samples by plain gradients; both projected and
L2-normalised. Score(z) = Σ_ckpt η̄_ckpt · cos(Γ_ckpt(z), g_ckpt(v)), averaged over the
validation samples of each target subtask, then the max over subtasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def adam_precondition(
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    epsilon_inside_sqrt: bool = True,
) -> torch.Tensor:
    """Γ = m' / √(v' + ε) (the released LESS code's `obtain_gradients_with_adam`), or the paper's
    m' / (√v' + ε) with `epsilon_inside_sqrt=False`; m' = β1·m + (1−β1)·g, v' = β2·v + (1−β2)·g²,
    per sample, without bias correction (as both).

    grads: (batch, *shape); exp_avg / exp_avg_sq: the optimizer state of the parameter (*shape).
    """
    beta1, beta2 = betas
    m = beta1 * exp_avg.unsqueeze(0) + (1 - beta1) * grads
    v = beta2 * exp_avg_sq.unsqueeze(0) + (1 - beta2) * grads.pow(2)
    return m / (v + eps).sqrt() if epsilon_inside_sqrt else m / (v.sqrt() + eps)


def normalise_rows(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def checkpoint_weights(mean_lrs: Sequence[float]) -> np.ndarray:
    """η̄ per checkpoint, renormalised to sum to 1."""
    weights = np.asarray(mean_lrs, dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError(f"checkpoint learning rates must be positive, got {list(mean_lrs)}")
    return weights / weights.sum()


def less_scores(
    train_features: Sequence[np.ndarray],
    val_features: Sequence[np.ndarray],
    mean_lrs: Sequence[float],
    val_subtasks: Sequence[str] | None = None,
    block_rows: int = 8192,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(score per training sample, {subtask: mean weighted cosine per training sample}).

    train_features[c]: (n, d) preconditioned features at checkpoint c; val_features[c]: (m, d).
    Rows are normalised here. Memory: one block of training rows at a time.
    """
    if len(train_features) != len(val_features) or len(train_features) != len(mean_lrs):
        raise ValueError("one train feature matrix, one validation matrix and one learning rate per checkpoint")
    weights = checkpoint_weights(mean_lrs)
    n, m = train_features[0].shape[0], val_features[0].shape[0]
    subtasks = list(val_subtasks) if val_subtasks is not None else ["all"] * m
    if len(subtasks) != m:
        raise ValueError(f"{len(subtasks)} subtask labels for {m} validation samples")
    names = sorted(set(subtasks))
    membership = np.zeros((m, len(names)))
    for row, name in enumerate(subtasks):
        membership[row, names.index(name)] = 1.0
    membership /= membership.sum(axis=0, keepdims=True)  # mean over each subtask's validation samples
    vals = [normalise_rows(np.asarray(v, dtype=np.float32)) for v in val_features]
    per_subtask = np.zeros((n, len(names)))
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        influence = np.zeros((stop - start, m))
        for weight, train, val in zip(weights, train_features, vals):
            influence += weight * (normalise_rows(np.asarray(train[start:stop], dtype=np.float32)) @ val.T)
        per_subtask[start:stop] = influence @ membership
    return per_subtask.max(axis=1), {name: per_subtask[:, i] for i, name in enumerate(names)}
