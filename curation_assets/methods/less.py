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
    Aggregation shared with `less_scores_from_cosines` (exact cosines, `projection: none`).
    Rows are normalised here. Memory: one block of training rows at a time.
    """
    if len(train_features) != len(val_features) or len(train_features) != len(mean_lrs):
        raise ValueError("one train feature matrix, one validation matrix and one learning rate per checkpoint")
    weights = checkpoint_weights(mean_lrs)
    n, m = train_features[0].shape[0], val_features[0].shape[0]
    names, membership = subtask_membership(val_subtasks, m)  # mean over each subtask's validation samples
    vals = [normalise_rows(np.asarray(v, dtype=np.float32)) for v in val_features]
    per_subtask = np.zeros((n, len(names)))
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        influence = np.zeros((stop - start, m))
        for weight, train, val in zip(weights, train_features, vals):
            influence += weight * (normalise_rows(np.asarray(train[start:stop], dtype=np.float32)) @ val.T)
        per_subtask[start:stop] = influence @ membership
    return per_subtask.max(axis=1), {name: per_subtask[:, i] for i, name in enumerate(names)}


def subtask_membership(val_subtasks: Sequence[str] | None, m: int) -> tuple[list[str], np.ndarray]:
    """(sorted subtask names, (m, subtasks) matrix whose column averages that subtask's validation samples)."""
    subtasks = list(val_subtasks) if val_subtasks is not None else ["all"] * m
    if len(subtasks) != m:
        raise ValueError(f"{len(subtasks)} subtask labels for {m} validation samples")
    names = sorted(set(subtasks))
    membership = np.zeros((m, len(names)))
    for row, name in enumerate(subtasks):
        membership[row, names.index(name)] = 1.0
    return names, membership / membership.sum(axis=0, keepdims=True)


def less_scores_from_cosines(
    cosines: Sequence[np.ndarray], mean_lrs: Sequence[float], val_subtasks: Sequence[str] | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`less_scores` from precomputed cosines: cosines[c] is (n, m), training sample × validation
    sample at checkpoint c (exact ones from `TargetCosines`, or projected ones); same aggregation."""
    if len(cosines) != len(mean_lrs):
        raise ValueError("one cosine matrix and one learning rate per checkpoint")
    weights = checkpoint_weights(mean_lrs)
    influence = sum(weight * np.asarray(c, dtype=np.float64) for weight, c in zip(weights, cosines))
    names, membership = subtask_membership(val_subtasks, np.shape(cosines[0])[1])
    per_subtask = np.asarray(influence) @ membership
    return per_subtask.max(axis=1), {name: per_subtask[:, i] for i, name in enumerate(names)}


def projected_cosines(train: np.ndarray, val: np.ndarray) -> np.ndarray:
    """(n, m) cosines of projected training and validation features (rows normalised)."""
    return normalise_rows(np.asarray(train, dtype=np.float32)) @ normalise_rows(np.asarray(val, dtype=np.float32)).T


class TargetCosines:
    """Exact LESS cosines without projection: each sample's full (preconditioned) LoRA gradient
    dotted with the full gradients of the few target validation samples, held in memory (m × P
    floats); the samples' gradients are never stored. Used as a `projector` of
    `per_sample_gradient_features`: `project_layers` gives (batch, m) cosines."""

    def __init__(self, targets: torch.Tensor) -> None:
        """targets: (m, P) flattened plain LoRA gradients of the validation samples, layers in module order."""
        self.targets = targets.float()
        self.target_norms = self.targets.norm(dim=1).clamp(min=1e-12)
        self.dim = targets.shape[0]

    def project_layers(self, layer_grads: Sequence[torch.Tensor]) -> torch.Tensor:
        flat = torch.cat([g.reshape(g.shape[0], -1).float() for g in layer_grads], dim=1)
        if self.targets.device != flat.device:
            self.targets, self.target_norms = self.targets.to(flat.device), self.target_norms.to(flat.device)
        norms = flat.norm(dim=1).clamp(min=1e-12)  # in the same pass as the dot products
        return (flat @ self.targets.T) / (norms[:, None] * self.target_norms[None, :])


def rank_correlations(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """Pearson and Spearman correlation of two score vectors (None with fewer than 3 samples or a constant one)."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"pearson": None, "spearman": None}
    # Spearman's rho is the Pearson correlation of the (average-tie) ranks
    return {"pearson": float(np.corrcoef(a, b)[0, 1]), "spearman": float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])}
