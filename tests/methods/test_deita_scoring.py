import math

import pytest
import torch

from curation_assets.methods.deita_scoring import (
    digit_expectation,
    digit_target,
    evol_score,
    rescale_ranked_score,
)
from curation_assets.methods.heldout import heldout_groups


def test_digit_expectation_is_the_hand_computed_softmax_mean():
    logits = torch.tensor([[0.0, 1.0, -2.0, 3.5, 0.25, -1.0], [10.0, 0, 0, 0, 0, 0], [0.0] * 6])
    for row, got in zip(logits.tolist(), digit_expectation(logits).tolist()):
        weights = [math.exp(v) for v in row]
        assert got == pytest.approx(sum(s * w for s, w in zip(range(1, 7), weights)) / sum(weights), abs=1e-12)
    assert digit_expectation(logits)[2].item() == pytest.approx(3.5)
    with pytest.raises(ValueError):
        digit_expectation(torch.zeros(2, 5))


def test_rescale_and_digit_target():
    assert [rescale_ranked_score(s, 6) for s in range(1, 7)] == [1, 2, 3, 4, 5, 6]
    assert [rescale_ranked_score(s, 3) for s in (1, 2, 3)] == [1.0, 3.5, 6.0]
    assert [digit_target(v) for v in (0.2, 1.49, 2.5, 3.5, 6.7)] == [1, 1, 3, 4, 6]
    with pytest.raises(ValueError):
        rescale_ranked_score(4, 3)


def test_evol_score_sums_products_over_turns():
    assert evol_score([2.0, 3.0], [4.0, 5.0]) == 23.0
    assert evol_score([2.0, None], [4.0, 5.0]) is None
    assert evol_score([], []) is None


def test_heldout_groups_are_seeded_and_bounded():
    groups = [f"g{i}" for i in range(10)] * 3
    held = heldout_groups(groups, 0.2, seed=0)
    assert len(held) == 2 and held == heldout_groups(list(reversed(groups)), 0.2, seed=0)
    assert any(heldout_groups(groups, 0.2, seed=s) != held for s in range(1, 5))
    assert len(heldout_groups(["a", "b"], 0.9, seed=0)) == 1
    assert heldout_groups(["a"], 0.5, seed=0) == set() and heldout_groups(groups, 0.0, seed=0) == set()
