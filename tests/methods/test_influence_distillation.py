"""Influence Distillation maths against independent computations (scipy solvers, brute force)."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.spatial.distance import pdist

from curation_assets.methods.influence_distillation import (
    KernelRidge,
    WeightProblem,
    median_bandwidth,
    project_to_simplex,
    rank_by_weight,
    round_robin,
    weights_for_budget,
)


def test_simplex_projection_is_the_closest_point():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 30):
        v = rng.normal(size=n) * 3
        w = project_to_simplex(v, float(n))
        assert w.min() >= 0 and w.sum() == pytest.approx(n)
        reference = minimize(lambda x: ((x - v) ** 2).sum(), np.full(n, 1.0), method="SLSQP",
                             bounds=[(0, None)] * n,
                             constraints=[{"type": "eq", "fun": lambda x: x.sum() - n}], options={"ftol": 1e-14})
        np.testing.assert_allclose(w, reference.x, atol=1e-5)


def test_median_bandwidth_is_the_median_pairwise_distance():
    x = np.random.default_rng(1).normal(size=(50, 7))
    assert median_bandwidth(x) == pytest.approx(np.median(pdist(x)))
    big = np.random.default_rng(2).normal(size=(1500, 3))
    sigma = median_bandwidth(big, max_points=1000, seed=3)
    sample = big[np.random.default_rng(3).choice(1500, 1000, replace=False)]
    assert sigma == pytest.approx(np.median(pdist(sample)))


def test_kernel_ridge_matches_the_closed_form_and_interpolates_landmarks():
    rng = np.random.default_rng(4)
    landmarks, values, queries = rng.normal(size=(12, 5)), rng.normal(size=(12, 3)), rng.normal(size=(9, 5))
    krr = KernelRidge.fit(landmarks, values)
    sigma = np.median(pdist(landmarks))
    kernel = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma ** 2))  # noqa: E731
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
    reference = minimize(objective, np.ones(n), jac=lambda w: -problem.p + q @ w + lam * w, method="SLSQP",
                         bounds=[(0, None)] * n, constraints=[{"type": "eq", "fun": lambda w: w.sum() - n}],
                         options={"ftol": 1e-15, "maxiter": 1000})
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
