import itertools

import numpy as np
import pytest

import curation_assets.methods.kcenter as kcenter
from curation_assets.methods.kcenter import k_center_greedy


def naive_k_center(x, k, seeds):
    """O(n·k) reference in float64: recompute every point's distance to every centre at each step.

    Returns the picks and, for each, its distance to the nearest earlier centre."""
    x = np.asarray(x, dtype=np.float64)

    def nearest(centres):  # every point's distance to its nearest centre, recomputed from scratch
        return np.linalg.norm(x[:, None, :] - x[centres][None, :, :], axis=2).min(axis=1)

    centres, radii = [], []
    for seed in seeds:
        radii.append(nearest(centres)[seed] if centres else np.inf)
        centres.append(seed)
    while len(centres) < k:
        d = nearest(centres)
        d[centres] = -1
        best = int(np.argmax(d))  # ties: lowest index
        centres.append(best)
        radii.append(d[best])
    return centres, np.asarray(radii), nearest(centres).max()


@pytest.fixture(params=["default", "tiny_batches"])
def layout(request, monkeypatch):
    """Default constants, or tiny ones so that small inputs go through every lazy path:
    several full passes, pool widening, rows leaving the pool, blocked reads."""
    if request.param == "tiny_batches":
        for name, value in [
            ("_BATCH", 4),
            ("_POOL_ROWS", 8),
            ("_POOL_LIMIT", 2),
            ("_BLOCK_ROWS", 37),
            ("_CHUNK_ROWS", 5),
        ]:
            monkeypatch.setattr(kcenter, name, value)
    return request.param


def clustered(rng, n, d, n_clusters, spread):
    centres = rng.normal(size=(n_clusters, d)) * 3
    return (centres[rng.integers(n_clusters, size=n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def with_duplicates(rng, x, copies):
    """Each row `copies` times, in a random order (exact ties between the copies)."""
    return np.repeat(x, copies, axis=0)[rng.permutation(len(x) * copies)]


DATASETS = {
    "normal_0": lambda rng: rng.normal(size=(300, 16)).astype(np.float32),
    "normal_1": lambda rng: rng.normal(size=(250, 5)).astype(np.float32),
    "unit_sphere": lambda rng: (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(
        rng.normal(size=(400, 32)).astype(np.float32)
    ),
    "clustered": lambda rng: clustered(rng, 400, 12, 6, 0.3),
    "clustered_tight": lambda rng: clustered(rng, 300, 8, 40, 0.01),
    "duplicates": lambda rng: with_duplicates(rng, rng.normal(size=(40, 6)).astype(np.float32), 3),
    "clustered_duplicates": lambda rng: with_duplicates(rng, clustered(rng, 60, 10, 4, 0.5), 4),
    "float64": lambda rng: rng.normal(size=(200, 10)),
}


@pytest.mark.parametrize("dataset", sorted(DATASETS))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_reference_from_same_start(dataset, seed, layout):
    rng = np.random.default_rng(seed)
    x = DATASETS[dataset](rng)
    k = min(len(x) // 2, 60)
    start = [int(rng.integers(len(x)))]
    result = k_center_greedy(x, k, seed_idx=start)
    picks, radii, coverage = naive_k_center(x, k, start)
    assert result.indices.tolist() == picks
    np.testing.assert_allclose(result.radii[1:], radii[1:], rtol=1e-5, atol=1e-5)
    assert result.coverage_radius == pytest.approx(coverage, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_radii_shrink(seed):
    x = np.random.default_rng(seed).normal(size=(300, 16)).astype(np.float32)
    result = k_center_greedy(x, 25, seed_idx=[7])
    assert result.radii[1:].tolist() == sorted(result.radii[1:].tolist(), reverse=True)


def test_several_seeds_match_reference(layout):
    rng = np.random.default_rng(5)
    x = clustered(rng, 300, 8, 5, 0.4)
    seeds = [3, 250, 3, 17, 99]  # duplicate seed dropped
    result = k_center_greedy(x, 30, seed_idx=seeds)
    picks, radii, _ = naive_k_center(x, 30, [3, 250, 17, 99])
    assert result.indices.tolist() == picks
    np.testing.assert_allclose(result.radii, radii, rtol=1e-5)


def test_lattice_ties_go_to_lowest_index(layout):
    """Integer grid points: many exactly equal distances."""
    x = np.array(list(itertools.product(range(5), repeat=3)), dtype=np.float32)
    x = np.concatenate([x, x[::7]])  # and exact duplicates at higher indices
    picks, _, coverage = naive_k_center(x, 100, [62])
    result = k_center_greedy(x, 100, seed_idx=[62])
    assert result.indices.tolist() == picks
    assert result.coverage_radius == coverage


def test_float64_near_ties_are_resolved_exactly(layout):
    """Distances that differ below float32 resolution: the exact re-check must order them."""
    rng = np.random.default_rng(2)
    angles = rng.permutation(np.linspace(0, 2 * np.pi, 40, endpoint=False))
    radius = 10.0 + rng.permutation(40) * 1e-9  # equal in float32, distinct in float64
    ring = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    x = np.concatenate([rng.normal(scale=0.1, size=(30, 2)), ring])
    picks, _, _ = naive_k_center(x, 20, [0])
    assert k_center_greedy(x, 20, seed_idx=[0]).indices.tolist() == picks


def test_all_rows_picked_including_duplicates(layout):
    x = np.repeat(np.eye(3), 5, axis=0)  # 3 distinct points, each 5 times
    result = k_center_greedy(x, 15, seed_idx=[4])
    assert result.indices.tolist() == naive_k_center(x, 15, [4])[0]
    assert result.coverage_radius == 0.0


def test_seeds_come_first_and_count_towards_k():
    x = np.random.default_rng(0).normal(size=(100, 4))
    result = k_center_greedy(x, 10, seed_idx=[5, 9, 5])
    assert result.indices[:2].tolist() == [5, 9] and len(set(result.indices.tolist())) == 10
    assert k_center_greedy(x, 1, seed_idx=[5, 9]).indices.tolist() == [5]


def test_bad_arguments():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="k must be"):
        k_center_greedy(x, 6)
    with pytest.raises(ValueError, match="seed index"):
        k_center_greedy(x, 2, seed_idx=[5])
    assert k_center_greedy(x, 0).indices.size == 0


def test_seeded_random_start_is_deterministic_and_layouts_agree(monkeypatch):
    x = np.random.default_rng(3).normal(size=(500, 8)).astype(np.float32)
    a = k_center_greedy(x, 20, rng=np.random.default_rng(11))
    b = k_center_greedy(x, 20, rng=np.random.default_rng(11))
    assert a.indices.tolist() == b.indices.tolist()
    for name, value in [("_BATCH", 3), ("_POOL_ROWS", 16), ("_BLOCK_ROWS", 37)]:
        monkeypatch.setattr(kcenter, name, value)
    c = kcenter.k_center_greedy(x, 20, rng=np.random.default_rng(11))
    assert c.indices.tolist() == a.indices.tolist()


def test_memmapped_input(tmp_path):
    x = np.random.default_rng(4).normal(size=(400, 8)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    expected = k_center_greedy(x, 15, seed_idx=[0]).indices.tolist()
    assert k_center_greedy(mm, 15, seed_idx=[0]).indices.tolist() == expected
