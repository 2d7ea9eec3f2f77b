"""Instruction Mining pieces: kNN-i against brute force, the least-squares rule against known
coefficients and the textbook formulas, subset means with missing values."""

import numpy as np
import pytest

from curation_assets.methods.instruction_mining import (
    fit_linear_rule,
    knn_mean_distance,
    random_subsets,
    subset_means,
)


def test_knn_mean_distance_equals_brute_force_with_duplicates():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    x[10] = x[11] = x[12]  # exact duplicates: distance 0 to each other, never to themselves
    queries = np.array([0, 10, 11, 12, 50, 119])
    got = knn_mean_distance(x, queries, k=6, block=4)
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    for q, value in zip(queries, got):
        others = np.delete(d[q], q)
        assert value == pytest.approx(np.sort(others)[:6].mean(), rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="more than 6 samples"):
        knn_mean_distance(x[:6], np.arange(6), k=6)


def test_fit_recovers_known_coefficients():
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(100, 30, 40), rng.normal(0.5, 0.1, 40), rng.normal(5, 2, 40)])
    true = np.array([0.004, -1.5, 0.2])
    y = 1.07 + x @ true
    rule = fit_linear_rule(x, y, ["len", "reward", "knn"])
    assert rule.coefficients == pytest.approx(true, rel=1e-9)
    assert rule.intercept == pytest.approx(1.07, rel=1e-9)
    assert rule.r_squared == pytest.approx(1.0)
    assert rule.predict(x[:3]) == pytest.approx(y[:3])
    # standardised coefficients are the raw ones times each indicator's standard deviation
    assert rule.standardised_coefficients == pytest.approx(true * x.std(axis=0), rel=1e-9)


def test_noisy_fit_equals_the_normal_equations_and_textbook_statistics():
    rng = np.random.default_rng(2)
    n, p = 30, 3
    x = rng.normal(size=(n, p)) * [1.0, 10.0, 0.01]
    y = 0.5 + x @ np.array([0.3, -0.02, 40.0]) + rng.normal(scale=0.2, size=n)
    rule = fit_linear_rule(x, y, ["a", "b", "c"])
    design = np.column_stack([np.ones(n), x])
    beta = np.linalg.solve(design.T @ design, design.T @ y)  # independent: raw normal equations
    assert rule.intercept == pytest.approx(beta[0], rel=1e-8)
    assert rule.coefficients == pytest.approx(beta[1:], rel=1e-8)
    residuals = y - design @ beta
    r2 = 1 - residuals @ residuals / ((y - y.mean()) ** 2).sum()
    assert rule.r_squared == pytest.approx(r2)
    assert rule.adjusted_r_squared == pytest.approx(1 - (1 - r2) * (n - 1) / (n - p - 1))
    sigma2 = residuals @ residuals / (n - p - 1)
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(design.T @ design)))[1:]
    assert rule.std_errors == pytest.approx(se, rel=1e-6)
    assert rule.t_values == pytest.approx(beta[1:] / se, rel=1e-6)
    assert rule.p_values[2] < 1e-6 and 0 <= rule.p_values.min() and rule.p_values.max() <= 1


def test_fit_refuses_too_few_subsets_and_constant_indicators():
    x = np.arange(6, dtype=float).reshape(3, 2)
    with pytest.raises(ValueError, match="at least 3 subsets"):
        fit_linear_rule(x[:2], np.ones(2), ["a", "b"])
    with pytest.raises(ValueError, match="constant"):
        fit_linear_rule(np.column_stack([np.arange(5.0), np.ones(5)]), np.arange(5.0), ["a", "b"])


def test_subset_means_ignore_missing_values():
    values = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, np.nan]])
    means = subset_means(values, [np.array([0, 1]), np.array([0, 2])])
    assert means[0].tolist() == [2.0, 4.0]
    assert means[1, 0] == 3.0 and np.isnan(means[1, 1])


def test_random_subsets_are_seeded_draws_without_replacement():
    first = random_subsets(50, 4, 10, seed=3)
    assert all(len(set(s.tolist())) == 10 for s in first)
    assert [s.tolist() for s in first] == [s.tolist() for s in random_subsets(50, 4, 10, seed=3)]
    assert first[0].tolist() != first[1].tolist()
    with pytest.raises(ValueError):
        random_subsets(5, 1, 6, seed=0)
