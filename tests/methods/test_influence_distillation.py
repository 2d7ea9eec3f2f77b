"""Influence Distillation maths against independent computations (scipy solvers, brute force)."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.spatial.distance import pdist

from curation_assets.methods.influence_distillation import (
    KernelRidge,
    WeightProblem,
    column_rankings,
    median_bandwidth,
    project_to_simplex,
    rank_by_weight,
    released_adam_coefficient,
    round_robin,
    weights_for_budget,
)


def lower_median(values: np.ndarray) -> float:
    """torch.median's median: the lower middle element for an even count (released _median_heuristic)."""
    return float(np.sort(values)[(len(values) - 1) // 2])


def test_simplex_projection_is_the_closest_point():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 30):
        v = rng.normal(size=n) * 3
        w = project_to_simplex(v, float(n))
        assert w.min() >= 0 and w.sum() == pytest.approx(n)
        reference = minimize(
            lambda x, v=v: ((x - v) ** 2).sum(),
            np.full(n, 1.0),
            method="SLSQP",
            bounds=[(0, None)] * n,
            constraints=[{"type": "eq", "fun": lambda x, n=n: x.sum() - n}],
            options={"ftol": 1e-14},
        )
        np.testing.assert_allclose(w, reference.x, atol=1e-5)


def test_median_bandwidth_is_the_lower_median_pairwise_distance():
    x = np.random.default_rng(1).normal(size=(50, 7))  # 1,225 pairs: the middle one
    assert median_bandwidth(x) == pytest.approx(np.median(pdist(x)))
    even = np.random.default_rng(8).normal(size=(8, 3))  # 28 pairs: the lower of the two middle ones
    assert median_bandwidth(even) == pytest.approx(lower_median(pdist(even)))
    assert median_bandwidth(even) != pytest.approx(np.median(pdist(even)))
    big = np.random.default_rng(2).normal(size=(1500, 3))
    sigma = median_bandwidth(big, max_points=1000, seed=3)
    sample = big[np.random.default_rng(3).choice(1500, 1000, replace=False)]
    assert sigma == pytest.approx(lower_median(pdist(sample)))


def test_kernel_ridge_matches_the_closed_form_and_interpolates_landmarks():
    rng = np.random.default_rng(4)
    landmarks, values, queries = rng.normal(size=(12, 5)), rng.normal(size=(12, 3)), rng.normal(size=(9, 5))
    krr = KernelRidge.fit(landmarks, values)
    sigma = lower_median(pdist(landmarks))
    kernel = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2))  # noqa: E731
    k_ll = kernel(landmarks, landmarks)
    expected = kernel(queries, landmarks) @ np.linalg.solve(k_ll + 1e-2 * np.eye(12), values)
    np.testing.assert_allclose(krr.predict(queries, block_rows=4), expected, rtol=1e-8, atol=1e-10)
    assert krr.ridge == pytest.approx(1e-2)  # mean diagonal of an RBF kernel is 1
    exact = KernelRidge.fit(landmarks, values, ridge_scale=1e-12)
    np.testing.assert_allclose(exact.predict(landmarks), values, atol=1e-6)


def test_first_order_weights_keep_the_top_k_influences():
    p = np.random.default_rng(5).normal(size=40)
    for k in (1, 3, 10, 40):
        solved = weights_for_budget(WeightProblem(p), k)
        assert solved.nonzero == k
        assert set(np.nonzero(solved.weights)[0]) == set(np.argsort(-p)[:k])
        assert solved.weights.sum() == pytest.approx(40)
        assert list(rank_by_weight(solved.weights, p)[:k]) == list(np.argsort(-p)[:k])


def test_second_order_weights_match_a_generic_qp_solver():
    rng = np.random.default_rng(6)
    n, t = 8, 3
    a = rng.normal(size=(n, t))
    problem = WeightProblem(a.mean(axis=1), a, eta=0.5)
    lam = 0.3
    ours = problem.solve(lam, iters=20000, tol=1e-14)
    q = problem.q_scale() * a @ a.T
    objective = lambda w: -problem.p @ w + 0.5 * w @ q @ w + 0.5 * lam * w @ w  # noqa: E731
    reference = minimize(
        objective,
        np.ones(n),
        jac=lambda w: -problem.p + q @ w + lam * w,
        method="SLSQP",
        bounds=[(0, None)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - n}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert problem.objective(ours, lam) == pytest.approx(objective(reference.x), rel=1e-7, abs=1e-9)
    np.testing.assert_allclose(ours, reference.x, atol=1e-4)
    # the quadratic term matters here: the first-order solution is different
    assert not np.allclose(WeightProblem(problem.p).solve(lam), ours, atol=1e-3)


def test_second_order_budget_search_reaches_the_budget():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(60, 4))
    solved = weights_for_budget(WeightProblem(a.mean(axis=1), a, eta=1.0), 12)
    assert solved.nonzero >= 12
    assert solved.weights.min() >= 0 and solved.weights.sum() == pytest.approx(60)


def test_round_robin_alternates_targets_and_skips_taken_samples():
    rankings = [np.array([3, 1, 2, 0]), np.array([3, 2, 0, 1])]
    chosen, picked_by = round_robin(rankings, 3)
    assert chosen.tolist() == [3, 2, 1] and picked_by.tolist() == [0, 1, 0]
    chosen, _ = round_robin(rankings, 10)
    assert sorted(chosen.tolist()) == [0, 1, 2, 3]


def released_round_robin(scores: np.ndarray, k: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """The released `_perform_selection_rr` as a plain loop: each round a new permutation of the
    targets; each takes the argmax of its scores, which is then masked for every target."""
    working = [column.copy() for column in scores.T]
    chosen, picked_by = [], []
    while len(chosen) < k:
        for target in rng.permutation(len(working)):
            if len(chosen) >= k:
                break
            best = int(np.argmax(working[target]))
            if working[target][best] > -1e8:
                chosen.append(best)
                picked_by.append(int(target))
                for column in working:
                    column[best] = -1e8
    return chosen, picked_by


def test_shuffled_round_robin_over_target_samples_equals_the_released_loop():
    rng = np.random.default_rng(9)
    scores = rng.normal(size=(300, 7))
    scores[:, 2] = scores[:, 1]  # two targets that agree: the second one skips what the first took
    scores[10:20, 4] = 5.0  # ties: the lower index first, as np.argmax
    for k in (1, 7, 40, 300):
        chosen, picked_by = round_robin(column_rankings(scores, k), k, np.random.default_rng(k))
        expected, expected_by = released_round_robin(scores, k, np.random.default_rng(k))
        assert chosen.tolist() == expected and picked_by.tolist() == expected_by
    # the order is reshuffled every round: a fixed order gives other picks here
    fixed, _ = round_robin(column_rankings(scores, 40), 40)
    assert fixed.tolist() != released_round_robin(scores, 40, np.random.default_rng(40))[0]


def test_column_rankings_keep_every_row_tied_at_the_cut():
    scores = np.array([[3.0], [1.0], [2.0], [2.0], [0.0]])
    assert [r.tolist() for r in column_rankings(scores, 2)] == [[0, 2, 3]]
    assert [r.tolist() for r in column_rankings(scores, 9)] == [[0, 2, 3, 1, 4]]


def test_released_adam_coefficient_is_the_linear_part_of_the_next_adamw_step():
    v, step, betas, eps = np.array([4e-6, 1e-8, 0.0]), 9, (0.9, 0.999), 1e-8
    by_hand = [(1 - 0.9) / (1 - 0.9**10) / ((x / (1 - 0.999**10)) ** 0.5 + 1e-8) for x in v]
    np.testing.assert_allclose(released_adam_coefficient(v, step, betas, eps), by_hand, rtol=1e-12)
    assert by_hand[2] == pytest.approx(0.1 / (1 - 0.9**10) / 1e-8)
    # torch's AdamW after 9 steps, then one more step with a tiny gradient g against one with
    # g = 0: the difference is lr · a · g up to √β2 (AdamW's v' = β2·v + (1−β2)·g² where the
    # released code keeps v as stored) — checks the step count t+1 of the bias corrections
    import torch

    def trained(generator_seed: int = 0) -> tuple[torch.Tensor, torch.optim.AdamW]:
        param = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.AdamW([param], lr=0.5, betas=betas, eps=eps, weight_decay=0.0)
        generator = torch.Generator().manual_seed(generator_seed)
        for _ in range(step):
            param.grad = torch.randn(3, generator=generator, dtype=torch.float64)
            optimizer.step()
        return param, optimizer

    g = torch.tensor([1e-6, -2e-6, 5e-7], dtype=torch.float64)
    param, optimizer = trained()
    stored_v, stored_step = optimizer.state[param]["exp_avg_sq"].clone(), int(optimizer.state[param]["step"])
    assert stored_step == step
    moved = []
    for gradient in (g, torch.zeros(3, dtype=torch.float64)):
        param, optimizer = trained()
        before = param.detach().clone()
        param.grad = gradient
        optimizer.step()
        moved.append(before - param.detach())
    a = released_adam_coefficient(stored_v, stored_step, betas, eps)
    torch.testing.assert_close(moved[0] - moved[1], 0.5 * a * g, rtol=1e-3, atol=0)
