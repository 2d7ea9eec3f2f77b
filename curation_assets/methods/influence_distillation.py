"""Influence Distillation (Nikdan, Cohen-Addad, Alistarh, Mirrokni 2025, "Efficient Data
Selection at Scale via Influence Distillation").

Sample weights w minimise the target loss after one training step, to second order:

    f(w) = −pᵀw + (η/2)·wᵀQw + (λ/2)·‖w‖²,  w ≥ 0,  Σw = |S|,
    p = G_S g_T,  Q = G_S H_T G_Sᵀ / |S|.

G_S holds each training sample's update direction (its gradient for GD, its Adam update
m'/(√v'+ε) for Adam), g_T the mean target gradient. λ is found by bisection so that `k`
samples get a non-zero weight (the paper's sparsity control); the first-order objective
(η = 0) then keeps exactly the top-k of p.

The target Hessian H_T is replaced by the target's empirical Fisher (1/|T|)·Σ_t g_t g_tᵀ, a
Gauss-Newton proxy: then Q = A Aᵀ / (|S|·|T|) with A = G_S G_Tᵀ (n × |T|), so every product
with Q costs O(n·|T|) and never forms an n × n matrix.

Landmarks: exact gradients are computed for L landmark samples only; every sample's
inner products with the target gradients are propagated from the landmarks by kernel ridge
regression on cheap JVP embeddings (RBF kernel, σ = median pairwise distance of up to 1000
points, ridge 1e-2 · mean kernel diagonal). Multiple targets share the budget round-robin.

The released first-order code (`pick_first_order`) scores each pool sample against each
target SAMPLE (unit-normalised directions, so the inner product is a cosine), with landmark
directions a ⊙ g, a = `released_adam_coefficient`, and picks by round robin over the target
samples in a freshly shuffled order each round (`round_robin` with an `rng`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MEDIAN_SAMPLE = 1000
RIDGE_SCALE = 1e-2


def pairwise_sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) squared Euclidean distances, clipped at 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)


def median_bandwidth(x: np.ndarray, max_points: int = MEDIAN_SAMPLE, seed: int = 0) -> float:
    """σ = median pairwise distance among up to `max_points` rows (a seeded sample).

    For an even number of pairs the lower of the two middle distances, as `torch.median` in the
    released `_median_heuristic`."""
    x = np.asarray(x)
    if x.shape[0] > max_points:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False)]
    upper = pairwise_sq_distances(x, x)[np.triu_indices(x.shape[0], k=1)]
    if not upper.size:
        return 1.0
    sigma = float(np.sqrt(np.partition(upper, (upper.size - 1) // 2)[(upper.size - 1) // 2]))
    return sigma if sigma > 0 else 1.0


def rbf_kernel(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-pairwise_sq_distances(a, b) / (2.0 * sigma * sigma))


@dataclass(frozen=True)
class KernelRidge:
    """KRR from landmark embeddings to landmark values; `predict` propagates to any rows."""

    landmarks: np.ndarray  # (L, e)
    coef: np.ndarray  # (L, t): (K_LL + ridge·I)⁻¹ · values
    sigma: float
    ridge: float

    @classmethod
    def fit(
        cls,
        landmarks: np.ndarray,
        values: np.ndarray,
        *,
        sigma: float | None = None,
        ridge_scale: float = RIDGE_SCALE,
        seed: int = 0,
    ) -> KernelRidge:
        landmarks = np.asarray(landmarks, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        sigma = median_bandwidth(landmarks, seed=seed) if sigma is None else float(sigma)
        k = rbf_kernel(landmarks, landmarks, sigma)
        ridge = ridge_scale * float(np.mean(np.diag(k)))
        coef = np.linalg.solve(k + ridge * np.eye(k.shape[0]), values)
        return cls(landmarks, coef, sigma, ridge)

    def predict(self, x: np.ndarray, block_rows: int = 8192) -> np.ndarray:
        """(len(x), t) propagated values; memory one block of rows × L at a time."""
        x = np.asarray(x)
        out = np.empty((x.shape[0], self.coef.shape[1]))
        for start in range(0, x.shape[0], block_rows):
            stop = min(x.shape[0], start + block_rows)
            out[start:stop] = rbf_kernel(x[start:stop], self.landmarks, self.sigma) @ self.coef
        return out


def project_to_simplex(v: np.ndarray, total: float) -> np.ndarray:
    """Euclidean projection of v onto {w ≥ 0, Σw = total} (sort-based, O(n log n))."""
    v = np.asarray(v, dtype=np.float64)
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - total
    index = np.arange(1, v.size + 1)
    rho = np.nonzero(u - cumulative / index > 0)[0][-1]
    theta = cumulative[rho] / (rho + 1)
    return np.maximum(v - theta, 0.0)


@dataclass(frozen=True)
class WeightProblem:
    """f(w) = −pᵀw + (η/2)·‖Aᵀw‖²/(n·|T|) + (λ/2)·‖w‖² over {w ≥ 0, Σw = n}.

    p: (n,) first-order influence, A: (n, |T|) per-target-sample inner products (None or
    η = 0 for the first-order problem).
    """

    p: np.ndarray
    a: np.ndarray | None = None
    eta: float = 0.0

    @property
    def n(self) -> int:
        return int(self.p.shape[0])

    @property
    def second_order(self) -> bool:
        return self.a is not None and self.eta > 0

    def q_scale(self) -> float:
        assert self.a is not None
        return self.eta / (self.n * self.a.shape[1])

    def objective(self, w: np.ndarray, lam: float) -> float:
        value = -float(self.p @ w) + 0.5 * lam * float(w @ w)
        if self.second_order:
            assert self.a is not None
            aw = self.a.T @ w
            value += 0.5 * self.q_scale() * float(aw @ aw)
        return value

    def gradient(self, w: np.ndarray, lam: float) -> np.ndarray:
        grad = -self.p + lam * w
        if self.second_order:
            assert self.a is not None
            grad = grad + self.q_scale() * (self.a @ (self.a.T @ w))
        return grad

    def lipschitz(self, lam: float) -> float:
        """A bound on the gradient's Lipschitz constant (step size 1/L)."""
        bound = lam
        if self.second_order:
            assert self.a is not None
            bound += self.q_scale() * float(np.linalg.norm(self.a, 2) ** 2)
        return bound

    def solve(self, lam: float, *, iters: int = 2000, tol: float = 1e-10) -> np.ndarray:
        """Minimiser for a fixed λ > 0: closed form when first-order, else accelerated projected
        gradient (FISTA) on the scaled simplex."""
        total = float(self.n)
        if not self.second_order:
            return project_to_simplex(self.p / lam, total)
        step = 1.0 / self.lipschitz(lam)
        w = project_to_simplex(self.p / lam, total)
        y, t = w.copy(), 1.0
        for _ in range(iters):
            w_next = project_to_simplex(y - step * self.gradient(y, lam), total)
            t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
            y = w_next + ((t - 1.0) / t_next) * (w_next - w)
            if np.max(np.abs(w_next - w)) <= tol * total:
                w = w_next
                break
            w, t = w_next, t_next
        return w


@dataclass(frozen=True)
class Weights:
    weights: np.ndarray  # (n,) non-negative, sum n
    lam: float
    nonzero: int


def weights_for_budget(problem: WeightProblem, k: int, *, iters: int = 60) -> Weights:
    """Bisection on log λ so that (about) `k` samples get a non-zero weight.

    A larger λ spreads the weight over more samples. The support size moves in steps, so the
    smallest λ with ≥ k non-zeros is returned; callers rank by weight and keep k.
    """
    n = problem.n
    k = max(1, min(k, n))
    if n == 1:
        return Weights(np.ones(1), 1.0, 1)
    spread = float(np.ptp(problem.p)) or 1.0
    low, high = np.log(spread * 1e-8 / n), np.log(spread * 1e8)

    def support(log_lam: float) -> tuple[np.ndarray, int]:
        w = problem.solve(float(np.exp(log_lam)))
        return w, int(np.count_nonzero(w > 1e-12 * n))

    best_w, best_count = support(high)
    best_log = high
    for _ in range(iters):
        middle = 0.5 * (low + high)
        w, count = support(middle)
        if count >= k:
            high, best_w, best_count, best_log = middle, w, count, middle
        else:
            low = middle
        if best_count == k:
            break
    return Weights(best_w, float(np.exp(best_log)), best_count)


def round_robin(
    rankings: Sequence[np.ndarray], k: int, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Targets take turns picking their best not yet selected sample until k are chosen.

    rankings[t]: sample indices in target t's order of preference. Without `rng` the targets
    take turns in index order; with it, every round runs in a new `rng.permutation` order (the
    released `_perform_selection_rr`, "shuffle for fairness"). Returns (indices, the target that
    picked each one).
    """
    chosen: list[int] = []
    picked_by: list[int] = []
    taken: set[int] = set()
    cursors = [0] * len(rankings)
    total = len({int(i) for ranking in rankings for i in ranking})
    k = min(k, total)
    while len(chosen) < k:
        order = range(len(rankings)) if rng is None else rng.permutation(len(rankings))
        for target in order:
            ranking = rankings[target]
            if len(chosen) >= k:
                break
            while cursors[target] < len(ranking) and int(ranking[cursors[target]]) in taken:
                cursors[target] += 1
            if cursors[target] < len(ranking):
                index = int(ranking[cursors[target]])
                taken.add(index)
                chosen.append(index)
                picked_by.append(int(target))
    return np.asarray(chosen, dtype=np.int64), np.asarray(picked_by, dtype=np.int64)


def column_rankings(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Each column's row indices by descending score (ties: lower index first, as `np.argmax`),
    cut to the depth a round robin over the columns can reach while picking k.

    Every entry a column's cursor passes is a taken sample, so it never passes more than k:
    the first k entries suffice (plus every row tied with the last one kept).
    """
    scores = np.asarray(scores)
    n = scores.shape[0]
    depth = min(n, max(k, 1))
    rankings = []
    for column in scores.T:
        if depth < n:
            threshold = np.partition(column, n - depth)[n - depth]
            rows = np.flatnonzero(column >= threshold)
        else:
            rows = np.arange(n)
        rankings.append(rows[np.argsort(-column[rows], kind="stable")])
    return rankings


def released_adam_coefficient(
    exp_avg_sq: Any, step: int, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> Any:
    """a = (1−β1)/(1−β1^(t+1)) / (√(v/(1−β2^(t+1))) + ε): the coefficient of a new gradient g in
    the next AdamW update, with v as stored (released `_read_optim`; landmark directions are
    a ⊙ g, the momentum part is dropped).

    v: the second moment (`exp_avg_sq`) after `step` optimizer steps; numpy arrays or tensors.
    """
    beta1, beta2 = betas
    v_hat = exp_avg_sq / (1 - beta2 ** (step + 1))
    return (1 - beta1) / (1 - beta1 ** (step + 1)) / (v_hat**0.5 + eps)


def target_inner_products(train: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A = G_S G_Tᵀ: (n, |T|) inner products of training update directions with target gradients."""
    return np.asarray(train, dtype=np.float64) @ np.asarray(target, dtype=np.float64).T


def rank_by_weight(weights: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Indices by descending weight; zero-weight samples after, by descending p."""
    return np.lexsort((-p, -weights))
