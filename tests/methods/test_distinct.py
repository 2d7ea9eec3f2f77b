"""`distinct_top_k` (methods/distinct.py) against the greedy walk written as a plain loop."""

import math

import numpy as np
import pytest

from curation_assets.methods.distinct import distinct_top_k


def plain_walk(scores, keys, k, descending):
    """Best first (NaN last, ties in input order); skip a sample whose any key is already taken."""
    def rank(i):
        if math.isnan(scores[i]):
            return (1, 0.0, i)
        return (0, -scores[i] if descending else scores[i], i)

    taken = [set() for _ in keys]
    picked = []
    for i in sorted(range(len(scores)), key=rank):
        if len(picked) == k:
            break
        if any(column[i] in seen for column, seen in zip(keys, taken)):
            continue
        for column, seen in zip(keys, taken):
            seen.add(column[i])
        picked.append(i)
    return picked


@pytest.mark.parametrize("descending", [True, False])
def test_distinct_top_k_equals_the_plain_walk(descending):
    rng = np.random.default_rng(7)
    for _ in range(400):
        n = int(rng.integers(1, 60))
        k = int(rng.integers(0, n + 1))
        scores = rng.normal(size=n).round(1)  # rounded: ties happen
        scores[rng.random(n) < 0.1] = np.nan
        conversation = [f"c{v}" for v in rng.integers(0, max(1, n // 3), n)]
        first_turn = rng.integers(0, max(1, n // 2), n).tolist()
        got = distinct_top_k(scores, [conversation, first_turn], k, descending=descending)
        assert got.tolist() == plain_walk(scores.tolist(), [conversation, first_turn], k, descending)


def test_chain_of_shared_keys_and_running_out():
    # 0 takes (a, x); 1 shares x -> skipped; 2 shares only b with skipped 1 -> taken; 3 shares a -> skipped
    scores = np.array([4.0, 3.0, 2.0, 1.0])
    got = distinct_top_k(scores, [["a", "b", "b", "a"], ["x", "x", "y", "z"]], 4)
    assert got.tolist() == [0, 2]
    assert distinct_top_k(scores, [], 3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="k must be"):
        distinct_top_k(scores, [["a"] * 4], 5)
