"""The DEITA representation filter against a plain one-row-at-a-time loop."""

import numpy as np
import pytest

from curation_assets.methods.diversity_filter import deita_repr_filter, similarity_filter


def brute_force(x: np.ndarray, scores: np.ndarray, budget: int, tau: float):
    """The sequential definition, in float64: (kept rows, {dropped row: (nearest kept row, similarity)})."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    walk = sorted((i for i in range(len(scores)) if not np.isnan(scores[i])), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    dropped: dict[int, tuple[int, float]] = {}
    for i in walk:
        if len(kept) >= budget:
            break
        sims = [float(unit[i] @ unit[j]) for j in kept]
        if sims and max(sims) > tau:
            best = int(np.argmax(sims))
            dropped[i] = (kept[best], sims[best])
        else:
            kept.append(i)
    return kept, dropped


def clustered(n_clusters: int, per: int, d: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    return np.concatenate([c + spread * rng.normal(size=(per, d)) for c in centres])


CASES = {
    "random": lambda: np.random.default_rng(1).normal(size=(300, 8)),
    "clustered": lambda: clustered(12, 40, 16, 0.15, 2),
    "clustered_tight": lambda: clustered(5, 60, 32, 0.02, 3),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("budget", [10, 60, 10_000])
@pytest.mark.parametrize("block", [1, 7, 1024])
def test_equals_the_sequential_definition(case, budget, block):
    x = CASES[case]()
    rng = np.random.default_rng(budget + block)
    scores = rng.integers(0, 5, size=len(x)).astype(float)  # many ties
    scores[rng.choice(len(x), 10, replace=False)] = np.nan  # unscored rows are never walked
    kept, dropped = brute_force(x, scores, budget, 0.9)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    order = np.array(sorted((i for i in range(len(x)) if not np.isnan(scores[i])), key=lambda i: (-scores[i], i)))
    result = similarity_filter(unit, 0.9, order=order, budget=budget, block=block)
    assert result.kept.tolist() == kept
    assert len(kept) <= budget
    marked = np.flatnonzero(result.duplicate_of >= 0)
    assert sorted(marked.tolist()) == sorted(dropped)
    for row in marked:
        nearest, sim = dropped[int(row)]
        assert result.duplicate_of[row] == nearest
        assert result.similarity[row] == pytest.approx(sim, abs=1e-5)
    assert result.walked == len(kept) + len(dropped)
    if block == 1024:  # the public entry point: same order from the scores
        assert deita_repr_filter(x, scores, budget, tau=0.9).kept.tolist() == kept


def test_budget_not_reached_keeps_every_diverse_row_and_budget_reached_stops():
    x = clustered(6, 30, 16, 0.01, 4)  # six tight clusters: one survivor each
    scores = np.arange(len(x), dtype=float)
    everything = deita_repr_filter(x, scores, budget=100)
    assert len(everything.kept) == 6 and everything.walked == len(x)
    # the best-scored row of each cluster survives (walk is by descending score)
    assert sorted(everything.kept.tolist()) == [30 * c + 29 for c in range(6)]
    two = deita_repr_filter(x, scores, budget=2)
    assert two.kept.tolist() == everything.kept[:2].tolist()
    assert two.walked < len(x) and (two.duplicate_of[: 30 * 4] == -1).all()  # rows after the stop are not marked


def test_identical_vectors_and_score_ties_keep_the_first_in_row_order():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])  # row 3 is row 2 scaled: similarity 1
    result = deita_repr_filter(x, np.array([1.0, 1.0, 0.5, 0.5]), budget=10)
    assert result.kept.tolist() == [0, 2]
    assert result.duplicate_of.tolist() == [-1, 0, -1, 2]
    assert result.similarity[1] == pytest.approx(1.0) and result.similarity[3] == pytest.approx(1.0)


def test_similarity_exactly_at_tau_is_kept():
    x = np.array([[1.0, 0.0], [0.5, np.sqrt(0.75)]])  # cosine 0.5
    assert deita_repr_filter(x, np.array([2.0, 1.0]), budget=5, tau=0.5).kept.tolist() == [0, 1]
    assert deita_repr_filter(x, np.array([2.0, 1.0]), budget=5, tau=0.49).kept.tolist() == [0]


def test_ascending_order_walks_lowest_scores_first():
    x = np.eye(4)
    assert deita_repr_filter(x, np.array([3.0, 1.0, 2.0, 0.0]), budget=2, descending=False).kept.tolist() == [3, 1]
