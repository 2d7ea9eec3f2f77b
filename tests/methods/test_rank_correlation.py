import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from curation_assets.methods.rank_correlation import average_ranks, spearman


def test_average_ranks_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 6, size=200).astype(float)
    np.testing.assert_array_equal(average_ranks(values), rankdata(values))
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_spearman_matches_scipy():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = rng.integers(0, 5, size=30).astype(float)
        b = a + rng.normal(size=30)
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(np.arange(5.0), np.arange(5.0)[::-1]) == pytest.approx(-1.0)


def test_undefined_cases_give_none():
    assert spearman(np.array([1.0]), np.array([2.0])) is None
    assert spearman(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])) is None
