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


def plain_round_robin(rankings, k, keys, seed):
    """Targets take turns (a new shuffled order each round when seeded) picking the first entry of
    their ranking that is neither taken nor shares a key with a taken sample."""
    rng = None if seed is None else np.random.default_rng(seed)
    picked, by, used = [], [], [set() for _ in keys]
    while len(picked) < k:
        before = len(picked)
        order = range(len(rankings)) if rng is None else rng.permutation(len(rankings))
        for target in order:
            if len(picked) >= k:
                break
            for index in rankings[target]:
                if index in picked or any(column[index] in seen for column, seen in zip(keys, used)):
                    continue
                picked.append(int(index))
                by.append(int(target))
                for column, seen in zip(keys, used):
                    seen.add(column[index])
                break
        if len(picked) == before:
            break
    return picked, by


@pytest.mark.parametrize("seed", [None, 3])
def test_distinct_round_robin_equals_the_plain_loop_and_the_plain_round_robin(seed):
    from curation_assets.methods.distinct import distinct_round_robin, group_codes
    from curation_assets.methods.influence_distillation import round_robin

    rng = np.random.default_rng(11)
    for _ in range(150):
        n, targets = int(rng.integers(1, 30)), int(rng.integers(1, 5))
        k = int(rng.integers(0, n + 3))
        rankings = [rng.permutation(n)[: int(rng.integers(1, n + 1))] for _ in range(targets)]
        keys = [rng.integers(0, max(1, n // 3), n).tolist(), rng.integers(0, n, n).tolist()]
        codes = group_codes(keys, n)
        chosen, by = distinct_round_robin(rankings, k, codes, None if seed is None else np.random.default_rng(seed))
        assert (chosen.tolist(), by.tolist()) == plain_round_robin(rankings, k, keys, seed)
        unique = group_codes([list(range(n))], n)  # nothing shared: the released round robin, draw for draw
        got = distinct_round_robin(rankings, k, unique, None if seed is None else np.random.default_rng(seed))
        expected = round_robin(rankings, k, None if seed is None else np.random.default_rng(seed))
        assert got[0].tolist() == expected[0].tolist() and got[1].tolist() == expected[1].tolist()


def test_shared_key_count():
    from curation_assets.methods.distinct import group_codes, shared_key_count

    codes = group_codes([["a", "b", "a", "c"], ["x", "y", "z", "y"]], 4)
    assert shared_key_count(codes) == 4 and shared_key_count(group_codes([["a", "b"]], 2)) == 0


def test_rankings_cut_at_k_plus_shared_samples_suffice():
    """The influence_distillation stage cuts each target's ranking at k + shared_key_count: the
    same picks as the full rankings."""
    from curation_assets.methods.distinct import distinct_round_robin, group_codes, shared_key_count
    from curation_assets.methods.influence_distillation import column_rankings

    rng = np.random.default_rng(5)
    for _ in range(100):
        n, targets, k = int(rng.integers(2, 40)), int(rng.integers(1, 4)), int(rng.integers(1, 10))
        scores = rng.normal(size=(n, targets))
        codes = group_codes([rng.integers(0, n // 2 + 1, n), rng.integers(0, n, n)], n)
        cut = column_rankings(scores, min(n, k + shared_key_count(codes)))
        full = [np.argsort(-scores[:, t], kind="stable") for t in range(targets)]
        got = distinct_round_robin(cut, k, codes, np.random.default_rng(1))
        expected = distinct_round_robin(full, k, codes, np.random.default_rng(1))
        assert got[0].tolist() == expected[0].tolist() and got[1].tolist() == expected[1].tolist()
