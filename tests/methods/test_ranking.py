import numpy as np
import pytest

from curation_assets.methods.budget import resolve_budget
from curation_assets.methods.ranking import random_subset, top_k


def test_random_subset_is_distinct_seeded_and_uniformish():
    first = random_subset(1000, 50, seed=3)
    assert len(set(first.tolist())) == 50
    assert np.array_equal(first, random_subset(1000, 50, seed=3))
    assert not np.array_equal(first, random_subset(1000, 50, seed=4))
    # each index equally likely: over many seeds, counts stay near k/n per draw
    counts = np.zeros(20)
    for seed in range(2000):
        counts[random_subset(20, 5, seed)] += 1
    expected = 2000 * 5 / 20
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_random_subset_rejects_impossible_k():
    with pytest.raises(ValueError):
        random_subset(3, 4, seed=0)


def test_top_k_matches_sorted_reference_with_nans_last():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=200)
    scores[[3, 50, 77]] = np.nan
    got = top_k(scores, 10)
    reference = sorted((i for i in range(200) if not np.isnan(scores[i])), key=lambda i: -scores[i])[:10]
    assert got.tolist() == reference
    assert top_k(scores, 200)[-3:].tolist() == [3, 50, 77]
    ascending = top_k(scores, 5, descending=False)
    assert ascending.tolist() == sorted((i for i in range(200) if not np.isnan(scores[i])), key=lambda i: scores[i])[:5]


def test_top_k_ties_keep_input_order():
    assert top_k(np.array([1.0, 2.0, 2.0, 1.0]), 3).tolist() == [1, 2, 0]


@pytest.mark.parametrize(
    ("pool", "count", "fraction", "expected"),
    [
        (100, 10, None, 10),
        (5, 10, None, 5),
        (200, None, 0.05, 10),
        (30, None, 0.01, 1),
        (0, None, 0.5, 0),
        (101, None, 0.5, 51),
    ],
)
def test_resolve_budget(pool, count, fraction, expected):
    assert resolve_budget(pool, count=count, fraction=fraction) == expected


def test_resolve_budget_needs_exactly_one():
    with pytest.raises(ValueError):
        resolve_budget(10, count=1, fraction=0.5)
    with pytest.raises(ValueError):
        resolve_budget(10)
