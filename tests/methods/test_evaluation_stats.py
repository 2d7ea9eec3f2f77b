"""methods/evaluation_stats.py against plain loops: the paired percentile bootstrap (also in
chunks smaller than the resample count) and the token-matched prefix."""

import numpy as np
import pytest

from curation_assets.methods import evaluation_stats
from curation_assets.methods.evaluation_stats import paired_bootstrap, token_matched_subset


def test_paired_bootstrap_equals_a_plain_loop(monkeypatch):
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.3, 37), rng.normal(1.1, 0.3, 37)
    a[[3, 9]] = np.nan  # samples without response tokens are left out of the pairs
    pairs = [(x, y) for x, y in zip(a, b) if np.isfinite(x) and np.isfinite(y)]
    d = [x - y for x, y in pairs]
    draws = np.random.default_rng(4)
    means = []
    for _ in range(300):
        picks = draws.integers(0, len(d), size=len(d))
        means.append(sum(d[i] for i in picks) / len(d))
    expected = (sum(d) / len(d), *np.percentile(means, [2.5, 97.5]))
    got = paired_bootstrap(a, b, resamples=300, seed=4)
    assert (got.delta, got.low, got.high, got.n) == pytest.approx((*expected, 35), rel=1e-12)
    monkeypatch.setattr(evaluation_stats, "_CHUNK_CELLS", 35 * 7)  # 7 resamples per chunk: same draws
    chunked = paired_bootstrap(a, b, resamples=300, seed=4)
    assert (chunked.low, chunked.high) == pytest.approx((got.low, got.high), rel=1e-12)


def test_token_matched_prefix_equals_a_plain_loop():
    rng = np.random.default_rng(1)
    for _ in range(200):
        tokens = rng.integers(0, 30, int(rng.integers(1, 40)))
        total = int(rng.integers(0, tokens.sum() + 20))
        seed = int(rng.integers(0, 1000))
        order = np.random.default_rng(seed).permutation(tokens.size)
        best, gap, running = 0, None, 0
        for length, index in enumerate(order, start=1):
            running += int(tokens[index])
            if gap is None or abs(running - total) < gap:
                best, gap = length, abs(running - total)
        assert token_matched_subset(tokens, total, seed).tolist() == order[:best].tolist()
