import numpy as np
import pytest

from curation_assets.methods.rank_correlation import spearman
from curation_assets.methods.ridge import fit_ridge


def _ridge_direct(x, y, alpha):
    """Unpenalised intercept: append a column of ones and leave it out of the penalty."""
    design = np.hstack([x, np.ones((len(x), 1))])
    penalty = alpha * np.eye(design.shape[1])
    penalty[-1, -1] = 0
    solution = np.linalg.solve(design.T @ design + penalty, design.T @ y)
    return solution[:-1], solution[-1]


def test_fit_matches_the_normal_equations_and_brute_force_leave_one_out():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 7))
    y = x @ rng.normal(size=7) + 2.0 + rng.normal(scale=0.5, size=40)
    alphas = [0.01, 0.3, 3.0, 30.0]
    head = fit_ridge(x, y, alphas)
    brute = {}
    for alpha in alphas:
        errors = []
        for i in range(len(x)):
            keep = np.arange(len(x)) != i
            w, b = _ridge_direct(x[keep], y[keep], alpha)
            errors.append(y[i] - (x[i] @ w + b))
        brute[alpha] = float(np.mean(np.square(errors)))
    best = min(brute, key=brute.get)
    assert head.alpha == best and head.loo_mse == pytest.approx(brute[best], rel=1e-9)
    w, b = _ridge_direct(x, y, best)
    np.testing.assert_allclose(head.weights, w, rtol=1e-9, atol=1e-12)
    assert head.bias == pytest.approx(b)
    np.testing.assert_allclose(head.predict(x), x @ w + b, rtol=1e-9)


def test_more_features_than_rows_still_generalises():
    """Embedding-sized features, few labels: the LOO choice avoids interpolating noise."""
    rng = np.random.default_rng(1)
    d = 384
    truth = rng.normal(size=d) / np.sqrt(d)
    x_train, x_test = rng.normal(size=(150, d)), rng.normal(size=(300, d))
    y_train = x_train @ truth + rng.normal(scale=0.3, size=150)
    head = fit_ridge(x_train, y_train)
    assert spearman(head.predict(x_test), x_test @ truth) > 0.5  # chance is 0
    assert head.alpha > 1e-3  # not the least-regularised candidate


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        fit_ridge(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        fit_ridge(np.full((4, 2), np.nan), np.zeros(4))
    with pytest.raises(ValueError, match="x \\(n, d\\)"):
        fit_ridge(np.zeros((4, 2)), np.zeros(3))
