import numpy as np

from curation_assets.methods.quantile_window import quantile_window


def test_window_matches_rank_definition():
    scores = np.arange(100, dtype=float)  # quantiles are exact on 0..99
    chosen = quantile_window(scores, size=0.3, offset=0.1)
    low, high = np.quantile(scores, [0.6, 0.9])
    assert set(chosen.tolist()) == {i for i in range(100) if low <= scores[i] <= high}
    assert chosen.tolist() == sorted(chosen.tolist(), key=lambda i: -scores[i])
    assert 29 <= len(chosen) <= 31


def test_nan_scores_are_never_selected():
    scores = np.array([np.nan, 1.0, 2.0, np.nan, 3.0])
    assert quantile_window(scores, size=1.0, offset=0.0).tolist() == [4, 2, 1]
