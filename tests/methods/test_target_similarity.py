"""Mean cosine similarity to a target set against a brute-force double loop."""

import numpy as np
import pytest

from curation_assets.methods.target_similarity import mean_cosine_similarity


def brute_force(pool, targets, labels):
    def cos(a, b):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))

    per = {}
    for name in sorted(set(labels)):
        rows = [j for j, label in enumerate(labels) if label == name]
        per[name] = np.array([sum(cos(p, targets[j]) for j in rows) / len(rows) for p in pool])
    return np.max(np.stack(list(per.values())), axis=0), per


@pytest.mark.parametrize("labels", [["t:all"] * 7, ["t:a", "t:b", "t:a", "u:all", "t:b", "t:a", "u:all"]])
def test_equals_brute_force(labels):
    rng = np.random.default_rng(3)
    pool = rng.normal(size=(40, 9)) * rng.uniform(0.1, 5, size=(40, 1))  # unnormalised rows
    pool[5] = 0.0  # a zero vector scores 0
    targets = rng.normal(size=(7, 9)) * rng.uniform(0.1, 5, size=(7, 1))
    scores, per = mean_cosine_similarity(pool.astype(np.float32), targets.astype(np.float32), labels)
    expected, expected_per = brute_force(pool, targets, labels)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert sorted(per) == sorted(expected_per)
    for name in per:
        np.testing.assert_allclose(per[name], expected_per[name], atol=1e-6)
    assert scores[5] == 0.0


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="dimensions"):
        mean_cosine_similarity(np.ones((3, 4)), np.ones((2, 5)), ["a", "a"])
    with pytest.raises(ValueError, match="labels"):
        mean_cosine_similarity(np.ones((3, 4)), np.ones((2, 4)), ["a"])
    with pytest.raises(ValueError, match="no target"):
        mean_cosine_similarity(np.ones((3, 4)), np.ones((0, 4)), [])
