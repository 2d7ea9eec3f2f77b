import math

import numpy as np
import pytest
import torch

from curation_assets.methods.less import adam_precondition, less_scores
from curation_assets.methods.projection import DenseRademacherProjector, KroneckerProjector, rademacher


@pytest.mark.parametrize("epsilon_inside_sqrt", [True, False])
def test_adam_preconditioning_matches_a_hand_computation_from_a_real_optimizer_state(epsilon_inside_sqrt):
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3, 4))
    optimizer = torch.optim.AdamW([weight], lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(3):
        optimizer.zero_grad()
        (weight.pow(3).sum()).backward()
        optimizer.step()
    state = optimizer.state[weight]
    grads = torch.randn(5, 3, 4)
    # a large ε (next to v' ≈ 1e-3..1e1) so the two placements differ well beyond float32 rounding
    eps = 1e-2
    got = adam_precondition(grads, state["exp_avg"], state["exp_avg_sq"], (0.9, 0.999), eps, epsilon_inside_sqrt)
    for i in range(5):
        for j in range(3):
            for k in range(4):
                g, m, v = float(grads[i, j, k]), float(state["exp_avg"][j, k]), float(state["exp_avg_sq"][j, k])
                m2, v2 = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
                # released LESS code: m' / sqrt(v' + eps); the paper: m' / (sqrt(v') + eps)
                want = m2 / math.sqrt(v2 + eps) if epsilon_inside_sqrt else m2 / (math.sqrt(v2) + eps)
                other = m2 / (math.sqrt(v2) + eps) if epsilon_inside_sqrt else m2 / math.sqrt(v2 + eps)
                assert float(got[i, j, k]) == pytest.approx(want, rel=1e-5)
                assert float(got[i, j, k]) != pytest.approx(other, rel=1e-5)


def test_rademacher_blocks_are_reproducible():
    a = rademacher(5, 7, 3, "x", 1)
    assert torch.equal(a, rademacher(5, 7, 3, "x", 1)) and not torch.equal(a, rademacher(5, 7, 3, "x", 2))
    assert set(a.unique().tolist()) == {-1.0, 1.0}


def _jl_error(projected: torch.Tensor, original: torch.Tensor) -> float:
    exact = original @ original.T
    approx = projected @ projected.T
    norms = original.norm(dim=1)
    return float(((approx - exact) / torch.outer(norms, norms)).abs().max())


def test_dense_projection_preserves_inner_products_within_jl_bounds():
    torch.manual_seed(1)
    x = torch.randn(12, 3000)
    d = 2048
    projector = DenseRademacherProjector(3000, d, seed=0, block_rows=700)  # several blocks
    error = _jl_error(projector.project(x), x)
    assert error < 4 * math.sqrt(math.log(12 * 12) / d)  # ~ 0.2; typical error ~ 1/sqrt(d) = 0.022
    # blockwise equals one dense matrix built from the same blocks
    phi = torch.cat(
        [
            rademacher(min(700, 3000 - s), d, 0, "dense", i, scale=1 / math.sqrt(d))
            for i, s in enumerate(range(0, 3000, 700))
        ]
    )
    assert torch.allclose(projector.project(x), x @ phi, atol=1e-4)


def test_kronecker_projection_preserves_inner_products():
    torch.manual_seed(2)
    layers = [torch.randn(10, 64, 48), torch.randn(10, 32, 64)]
    projector = KroneckerProjector([(64, 48), (32, 64)], dim=4096, seed=0)
    flat = torch.cat([g.reshape(10, -1) for g in layers], dim=1)
    error = _jl_error(projector.project_layers(layers), flat)
    assert projector.dim <= 4096 and error < 0.25
    # unbiased: averaging over seeds converges on the exact inner products
    mean = (
        sum(
            KroneckerProjector([(64, 48), (32, 64)], 4096, seed=s).project_layers(layers)[:2].prod(0).sum()
            for s in range(20)
        )
        / 20
    )
    exact = float(flat[0] @ flat[1])
    assert abs(float(mean) - exact) < 0.1 * float(flat[0].norm() * flat[1].norm())


def test_less_scores_equal_a_direct_dense_computation():
    rng = np.random.default_rng(0)
    n, m, d = 7, 5, 16
    trains = [rng.normal(size=(n, d)) for _ in range(3)]
    vals = [rng.normal(size=(m, d)) for _ in range(3)]
    lrs = [2e-5, 1.5e-5, 0.5e-5]
    subtasks = ["a", "b", "a", "b", "b"]
    scores, per = less_scores(trains, vals, lrs, subtasks, block_rows=3)
    weights = np.array(lrs) / sum(lrs)
    for i in range(n):
        by_task = {}
        for task in ("a", "b"):
            values = []
            for j in range(m):
                if subtasks[j] != task:
                    continue
                total = 0.0
                for c in range(3):
                    t, v = trains[c][i], vals[c][j]
                    total += weights[c] * float(t @ v / (np.linalg.norm(t) * np.linalg.norm(v)))
                values.append(total)
            by_task[task] = sum(values) / len(values)
        assert per["a"][i] == pytest.approx(by_task["a"], abs=1e-6)  # features are float32
        assert per["b"][i] == pytest.approx(by_task["b"], abs=1e-6)
        assert scores[i] == pytest.approx(max(by_task.values()), abs=1e-6)


def test_fwht_is_orthonormal_hadamard():
    from scipy.linalg import hadamard

    from curation_assets.methods.projection import fwht

    x = torch.randn(3, 16, dtype=torch.float64)
    expected = x @ torch.tensor(hadamard(16), dtype=torch.float64).T / 4
    assert torch.allclose(fwht(x), expected)


def test_hadamard_projection_preserves_inner_products():
    from curation_assets.methods.projection import HadamardProjector

    torch.manual_seed(3)
    x = torch.randn(12, 3000)
    projector = HadamardProjector(3000, 2048, seed=0)
    assert _jl_error(projector.project(x), x) < 4 * math.sqrt(math.log(12 * 12) / 2048)
    assert torch.equal(projector.project(x), HadamardProjector(3000, 2048, seed=0).project(x))


def test_exact_cosines_equal_a_plain_loop_and_aggregate_like_less_scores_of_the_full_vectors():
    from curation_assets.methods.less import TargetCosines, less_scores_from_cosines
    from curation_assets.methods.projection import FlatGradients, PairedProjector

    torch.manual_seed(2)
    shapes = [(3, 4), (2, 6)]
    checkpoints = [([torch.randn(5, *s) for s in shapes], [torch.randn(4, *s) for s in shapes]) for _ in range(2)]
    labels, lrs = ["a", "b", "a", "a"], [2e-5, 1e-5]
    cosines, flat_train, flat_val = [], [], []
    for train, val in checkpoints:
        targets = FlatGradients().project_layers(val)
        got = TargetCosines(targets).project_layers(train)
        for i in range(5):
            x = np.concatenate([layer[i].reshape(-1).numpy() for layer in train]).astype(np.float64)
            for j in range(4):
                y = np.concatenate([layer[j].reshape(-1).numpy() for layer in val]).astype(np.float64)
                assert float(got[i, j]) == pytest.approx(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)), abs=1e-5)
        paired = PairedProjector(TargetCosines(targets), FlatGradients()).project_layers(train)
        assert torch.allclose(paired[:, :4], got) and torch.allclose(
            paired[:, 4:], FlatGradients().project_layers(train)
        )
        cosines.append(got.numpy())
        flat_train.append(FlatGradients().project_layers(train).numpy())
        flat_val.append(targets.numpy())
    scores, per_subtask = less_scores_from_cosines(cosines, lrs, labels)
    want, want_subtasks = less_scores(flat_train, flat_val, lrs, labels)
    assert np.allclose(scores, want, atol=1e-6) and sorted(per_subtask) == sorted(want_subtasks) == ["a", "b"]
    for name in per_subtask:
        assert np.allclose(per_subtask[name], want_subtasks[name], atol=1e-6)
