import numpy as np
import pytest

from curation_assets.methods.clustering import proportional_budgets
from curation_assets.methods.coresets import deft_ucs, kmeans_kcenter_coreset
from curation_assets.methods.diversity_filter import similarity_filter
from curation_assets.methods.lift_variance import lift_variance_selection


def blobs(n_per=(200, 100, 50), d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(len(n_per), d))
    return np.concatenate([c + rng.normal(size=(n, d)) for c, n in zip(centres, n_per)]).astype(np.float32)


@pytest.mark.parametrize(("sizes", "k"), [([200, 100, 50], 35), ([1, 1, 1], 2), ([10, 0, 5], 15), ([7, 3], 4)])
def test_proportional_budgets_sum_to_k_and_follow_sizes(sizes, k):
    budgets = proportional_budgets(np.array(sizes), k)
    assert budgets.sum() == min(k, sum(sizes))
    assert np.all(budgets <= sizes)
    exact = np.array(sizes) * min(k, sum(sizes)) / sum(sizes)
    assert np.all(np.abs(budgets - exact) < 1)


def test_kmeans_coreset_budgets_respect_cluster_proportions():
    x = blobs()
    result = kmeans_kcenter_coreset(x, 35, n_clusters=3, seed=0)
    assert result.indices.size == 35 and len(set(result.indices.tolist())) == 35
    sizes = np.bincount(result.labels, minlength=3)
    assert sorted(sizes.tolist()) == [50, 100, 200]  # well separated blobs are recovered
    picked_per_cluster = np.bincount(result.labels[result.indices], minlength=3)
    assert picked_per_cluster.tolist() == result.budgets.tolist()
    assert np.all(np.abs(result.budgets - 35 * sizes / sizes.sum()) < 1)


def test_deft_ucs_proportional_easy_and_hard_match_the_definition():
    x = blobs()
    result = deft_ucs(x, 40, n_clusters=3, alpha=0.5, sampling="proportional", seed=1)
    c = result.centroids[result.labels]
    dist = 1 - np.sum(x * c, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(c, axis=1))
    for cluster in range(3):
        members = np.flatnonzero(result.labels == cluster)
        budget = int(result.budgets[cluster])
        n_easy = round(0.5 * budget)
        ranked = members[np.argsort(dist[members], kind="stable")]
        chosen = result.indices[np.isin(result.indices, members)]
        roles = result.role[np.isin(result.indices, members)]
        assert set(chosen[roles == "easy"].tolist()) == set(ranked[:n_easy].tolist())
        assert set(chosen[roles == "hard"].tolist()) == set(ranked[::-1][: budget - n_easy].tolist())
    assert result.indices.size == 40


def plain_deft_ucs_per_cluster(x, labels, centroids, available, amount, alpha, beta):
    """DEFT-UCS's per-cluster sampling as a plain loop: for each cluster, sort its points by cosine
    distance to the centroid; the round(alpha*A) closest are easy, the farthest of the rest are hard,
    round((alpha+beta)*A) in all (all of the cluster when it is smaller)."""
    easy, hard = {}, {}
    for cluster in range(len(centroids)):
        c = centroids[cluster]
        points = [i for i in range(len(x)) if labels[i] == cluster and available[i]]
        dist = {
            i: 1 - float(np.dot(x[i], c)) / (float(np.linalg.norm(x[i])) * float(np.linalg.norm(c))) for i in points
        }
        ranked = sorted(points, key=lambda i: (dist[i], i))
        n_easy = min(round(alpha * amount), len(ranked))
        n_hard = min(round((alpha + beta) * amount) - round(alpha * amount), len(ranked) - n_easy)
        easy[cluster] = set(ranked[:n_easy])
        hard[cluster] = set(ranked[len(ranked) - n_hard :])
    return easy, hard


@pytest.mark.parametrize(
    ("sizes", "amount", "alpha", "beta"),
    [
        ((200, 100, 50), 40, 0.25, 0.5),  # alpha and beta independent: 10 easy + 20 hard per cluster
        ((200, 100, 8), 12, 0.5, 0.5),  # the small cluster gives all its 8 points
        ((200, 100, 50), 30, 0.0, 1.0),  # the paper's hard sampling
    ],
)
def test_deft_ucs_per_cluster_counts_equal_a(sizes, amount, alpha, beta):
    x = blobs(sizes, seed=4)
    result = deft_ucs(x, n_clusters=3, per_cluster=amount, alpha=alpha, beta=beta, seed=3)
    easy, hard = plain_deft_ucs_per_cluster(
        x, result.labels, result.centroids, np.ones(len(x), bool), amount, alpha, beta
    )
    for cluster in range(3):
        in_cluster = result.labels[result.indices] == cluster
        chosen = result.indices[in_cluster]
        roles = result.role[in_cluster]
        assert set(chosen[roles == "easy"].tolist()) == easy[cluster]
        assert set(chosen[roles == "hard"].tolist()) == hard[cluster]
        size = int(np.sum(result.labels == cluster))
        expected = min(size, round((alpha + beta) * amount))
        assert chosen.size == result.budgets[cluster] == expected  # A per cluster, or the whole small cluster
    assert len(set(result.indices.tolist())) == result.indices.size and result.amount == amount


def test_deft_ucs_budget_sets_a_whose_full_clusters_fit():
    x = blobs(seed=4)
    result = deft_ucs(x, 100, n_clusters=3, alpha=0.3, beta=0.4, base_size=10, seed=5)
    a = result.amount
    assert a == (100 - 10) // (3 * 0.7) == 42 and 10 + 3 * round(0.7 * a) <= 100
    assert result.indices.size == 10 + 3 * 29 and (result.role == "easy").sum() == 3 * 13
    base = result.indices[result.role == "base"]
    available = np.ones(len(x), bool)
    available[base] = False
    easy, hard = plain_deft_ucs_per_cluster(x, result.labels, result.centroids, available, a, 0.3, 0.4)
    assert set(result.indices[result.role == "easy"].tolist()) == set().union(*easy.values())
    assert set(result.indices[result.role == "hard"].tolist()) == set().union(*hard.values())
    with pytest.raises(ValueError, match="no per-cluster amount"):
        deft_ucs(x, 2, n_clusters=3, seed=5)
    one = deft_ucs(x, 5, n_clusters=3, seed=5)  # A = 1 with alpha = beta = 0.5: 0 easy + 1 hard per cluster
    assert one.amount == 1 and one.role.tolist() == ["hard"] * 3
    with pytest.raises(ValueError, match="selects nothing"):
        deft_ucs(x, n_clusters=3, per_cluster=1, alpha=0.2, beta=0.2, seed=5)
    with pytest.raises(ValueError, match="beta = 1 - alpha"):
        deft_ucs(x, 40, n_clusters=3, alpha=0.5, beta=0.2, sampling="proportional")


def test_deft_ucs_base_set_is_stratified_and_counts_towards_k():
    x = blobs()
    result = deft_ucs(x, 40, n_clusters=3, base_size=14, sampling="proportional", seed=2)
    base = result.indices[result.role == "base"]
    assert base.size == 14 and result.indices.size == 40 and len(set(result.indices.tolist())) == 40
    sizes = np.bincount(result.labels, minlength=3)
    assert np.all(np.abs(np.bincount(result.labels[base], minlength=3) - 14 * sizes / sizes.sum()) < 1)


def test_lift_variance_keeps_exactly_the_rows_above_the_80th_percentile():
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(5).normal(size=(500, 20)) * np.linspace(0.1, 3, 20)
    result = lift_variance_selection(x)
    reduced = PCA(n_components=0.95, svd_solver="full").fit_transform(StandardScaler().fit_transform(x))
    variance = reduced.var(axis=1)
    expected = set(np.flatnonzero(variance > np.percentile(variance, 80)).tolist())
    assert set(result.indices.tolist()) == expected
    assert len(expected) == 100  # the top 20%
    assert result.row_variance[result.indices].tolist() == sorted(result.row_variance[result.indices], reverse=True)


def test_similarity_filter_never_keeps_two_rows_above_threshold_and_matches_brute_force():
    rng = np.random.default_rng(6)
    base = rng.normal(size=(60, 16))
    x = np.concatenate([base, base[:30] + 0.05 * rng.normal(size=(30, 16))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(x))
    result = similarity_filter(x, 0.9, order=order)
    kept = result.kept
    sims = x[kept] @ x[kept].T
    np.fill_diagonal(sims, -1)
    assert sims.max() <= 0.9
    brute: list[int] = []
    for i in order:  # brute-force greedy loop
        if all(x[i] @ x[j] <= 0.9 for j in brute):
            brute.append(int(i))
    assert kept.tolist() == brute
    for row in np.flatnonzero(result.duplicate_of >= 0):
        assert x[row] @ x[result.duplicate_of[row]] > 0.9


def test_similarity_filter_stops_at_budget():
    x = np.eye(10, dtype=np.float32)
    result = similarity_filter(x, 0.5, order=np.arange(9, -1, -1), budget=4)
    assert result.kept.tolist() == [9, 8, 7, 6]
