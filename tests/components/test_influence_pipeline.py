"""Influence Distillation through the runner on a tiny random Llama: JVP embeddings, landmark
gradients, KRR propagation and round-robin selection, checked against an independent
computation (backward per sample, hand Adam preconditioning, scikit-learn's KernelRidge)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from curation_assets.methods.less import adam_precondition
from curation_assets.methods.projection import DenseRademacherProjector
from curation_assets.models.chat_format import collate, encode_conversation
from curation_assets.models.gradients import per_sample_response_losses
from curation_assets.models.lora import LoraSettings, attach_lora
from curation_assets.store import DuckDBStore
from tests.components.test_less_pipeline import write_targets
from tests.support.files import write_pool
from tests.support.pipelines import LORA, jvp_stage, lora_warmup_stage, pipeline_document, target_block
from tests.support.runs import run_document

# the project's earlier variant, kept as options: LoRA gradients, LESS directions, raw inner
# products, exact landmark rows, weights per subtask picked in turn
PROJECT_VARIANT = {
    "params": "lora",
    "adam_direction": "less",
    "normalize": False,
    "exact_landmarks": True,
    "round_robin": "subtasks",
}


def pipeline(tiny_lm, **selection):
    influential = {
        "name": "influential",
        "kind": "influence_distillation",
        "jvp": "jvp",
        "warmup": "warmup",
        "fraction": 0.25,
        "landmarks": 8,
        "projection": "dense",
        "dim": 64,
        "batch_size": 4,
        "targets": [target_block()],
        **selection,
    }
    return pipeline_document("infdist", [lora_warmup_stage(tiny_lm), jvp_stage(tiny_lm)], [influential])


@pytest.mark.parametrize("adam_direction", ["less", "released"])
def test_influence_distillation_equals_an_independent_computation(tmp_path, tiny_lm, adam_direction):
    from sklearn.kernel_ridge import KernelRidge

    write_pool(tmp_path / "pool.jsonl", 20)
    write_targets(tmp_path / "target.jsonl")
    run_document(tmp_path, pipeline(tiny_lm, **{**PROJECT_VARIANT, "adam_direction": adam_direction}))

    with DuckDBStore(tmp_path / "infdist.duckdb").reader(read_only=True) as con:
        path = con.execute("SELECT path FROM lora_checkpoints ORDER BY epoch DESC LIMIT 1").fetchall()[0][0]
        pool = con.execute(
            "SELECT s.sample_id, s.messages, j.embedding FROM samples AS s JOIN jvp_embeddings AS j "
            "USING (sample_id) WHERE s.active ORDER BY s.sample_id"
        ).fetchall()
        targets = con.execute(
            "SELECT sample_id, subtask, messages FROM target_samples WHERE split = 'validation'"
        ).fetchall()
        landmarks = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT sample_id FROM influence_scores WHERE selection = 'influential' AND landmark"
            ).fetchall()
        }
        influence = {
            (sid, sub): value
            for sid, sub, value in con.execute("SELECT sample_id, subtask, influence FROM influence_scores").fetchall()
        }
        members = [
            r[0]
            for r in con.execute(
                "SELECT sample_id FROM selections WHERE selection = 'influential' ORDER BY rank"
            ).fetchall()
        ]
        weights = con.execute(
            "SELECT sum(weight), count(*) FILTER (weight > 0) FROM influence_scores GROUP BY subtask"
        ).fetchall()
    assert len(pool) == 21 and len(landmarks) == 8 and len(members) == 5  # 20 + one empty response
    for total, nonzero in weights:
        assert total == pytest.approx(21) and nonzero == 5

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    model = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_lm), LoraSettings(**LORA), 0).eval()
    set_peft_model_state_dict(model, load_file(str(Path(path) / "adapter_model.safetensors")))
    state = torch.load(Path(path) / "optimizer.pt")
    named = [p for _, p in model.named_parameters() if p.requires_grad]
    projector = DenseRademacherProjector(sum(p.numel() for p in named), 64, seed=0)

    def gradient(messages, precondition):
        model.zero_grad(set_to_none=True)
        sample = encode_conversation(tokenizer, messages, 64)
        per_sample_response_losses(model, collate([sample], tokenizer.pad_token_id))[0].backward()
        flat = []
        for index, p in enumerate(named):
            g = p.grad
            if precondition and adam_direction == "less":
                g = adam_precondition(
                    g.unsqueeze(0), state["state"][index]["exp_avg"], state["state"][index]["exp_avg_sq"]
                )[0]
            elif precondition:  # the released coefficient, from the checkpoint's v and step count
                t, v = int(state["state"][index]["step"]), state["state"][index]["exp_avg_sq"]
                g = g * (1 - 0.9) / (1 - 0.9 ** (t + 1)) / ((v / (1 - 0.999 ** (t + 1))).sqrt() + 1e-8)
            flat.append(g.reshape(-1))
        return projector.project(torch.cat(flat).unsqueeze(0))[0].double().numpy()

    rows = [i for i, r in enumerate(pool) if r[0] in landmarks]
    landmark_grads = np.stack([gradient(pool[i][1], True) for i in rows])
    target_grads = np.stack([gradient(m, False) for _, _, m in targets])
    exact = landmark_grads @ target_grads.T
    embeddings = np.array([r[2] for r in pool], dtype=np.float64)
    distances = np.sort(pdist(embeddings[rows]))
    sigma = distances[(len(distances) - 1) // 2]  # the lower median, as torch.median
    krr = KernelRidge(alpha=1e-2, kernel="rbf", gamma=1 / (2 * sigma**2)).fit(embeddings[rows], exact)
    inner = krr.predict(embeddings)
    inner[rows] = exact
    rankings = {}
    for subtask in sorted({t[1] for t in targets}):
        p = inner[:, [j for j, t in enumerate(targets) if t[1] == subtask]].mean(axis=1)
        for i, (sid, _, _) in enumerate(pool):
            assert influence[(sid, f"task:{subtask}")] == pytest.approx(p[i], rel=1e-3, abs=1e-6)
        rankings[subtask] = list(np.argsort(-p, kind="stable"))
    expected, turn = [], 0
    names = sorted(rankings)
    while len(expected) < 5:
        ranking = rankings[names[turn % len(names)]]
        expected.append(next(i for i in ranking if pool[i][0] not in expected and i not in expected))
        expected[-1] = pool[expected[-1]][0]
        turn += 1
    assert members == expected


def test_second_order_and_kcenter_landmarks_run_end_to_end(tmp_path, tiny_lm):
    write_pool(tmp_path / "pool.jsonl", 20)
    write_targets(tmp_path / "target.jsonl")
    run_document(
        tmp_path,
        pipeline(
            tiny_lm,
            order="second",
            landmark_selection="kcenter",
            optimizer="sgd",
            learning_rate=1.0,
            projection="hadamard",
            round_robin="subtasks",
        ),
    )
    with DuckDBStore(tmp_path / "infdist.duckdb").reader(read_only=True) as con:
        members = con.execute("SELECT count(*), min(score) FROM selections WHERE selection = 'influential'").fetchall()[
            0
        ]
        stats = con.execute("SELECT stats FROM stage_runs WHERE stage = 'influential'").fetchall()[0][0]
    assert members[0] == 5 and members[1] > 0
    assert '"order": "second"' in stats


def released_selection(tiny_lm, folder: Path, selection: str, *, normalize: bool, k: int, seed: int = 0):
    """The released `pick_first_order` written out as plain loops on what the pipeline stored:
    per sample (batch 1) the transformers loss's gradient w.r.t. every down_proj weight of the
    warmed model, landmarks times a = (1−β1)/(1−β1^(t+1))/(√(v/(1−β2^(t+1)))+ε), unit-normalised,
    inner products, KRR per target sample (σ = √ of the lower median squared distance, damped by
    1e-2 · mean diagonal, the damped output for every sample), shuffled round robin over the
    target samples. The tiny model's 4,096 down_proj weights fit the Hadamard projection whole
    (an orthonormal rotation), so raw gradients give the same inner products.

    Returns the picked sample ids and, per pool sample, (response tokens, landmark direction
    norm, its cosine and raw inner product with the first target sample)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with DuckDBStore(folder / "infdist.duckdb").reader(read_only=True) as con:
        pool = con.execute(
            "SELECT s.sample_id, s.messages, j.embedding FROM samples AS s JOIN jvp_embeddings AS j "
            "USING (sample_id) WHERE s.active ORDER BY s.sample_id"
        ).fetchall()
        targets = con.execute(
            "SELECT messages FROM target_samples WHERE selection = $s AND split = 'validation' "
            "ORDER BY target, sample_id",
            {"s": selection},
        ).fetchall()
        landmarks = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT sample_id FROM influence_scores WHERE selection = $s AND landmark", {"s": selection}
            ).fetchall()
        }
    (saved,) = (folder / "infdist.artifacts" / selection).glob("*/weight-warmup-epoch-*.pt")
    state = torch.load(saved)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    names = [f"model.layers.{i}.mlp.down_proj" for i in range(2)]
    params = [model.get_submodule(name).weight for name in names]
    with torch.no_grad():
        for name, param in zip(names, params):
            param.copy_(state["weights"][name])
    (beta1, beta2), eps, t = state["betas"], state["eps"], state["step"]
    coefficient = [
        (1 - beta1) / (1 - beta1 ** (t + 1)) / ((state["exp_avg_sq"][name] / (1 - beta2 ** (t + 1))).sqrt() + eps)
        for name in names
    ]

    def gradient(messages, landmark):
        batch = collate([encode_conversation(tokenizer, messages, 64)], tokenizer.pad_token_id)
        tokens = int((batch["labels"] != -100).sum())
        if tokens == 0:  # the released calc_grad: no labels, zero gradient
            return np.zeros(sum(p.numel() for p in params)), tokens
        loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        grads = torch.autograd.grad(loss, params)
        if landmark:
            grads = [g * a for g, a in zip(grads, coefficient)]
        return torch.cat([g.reshape(-1) for g in grads]).double().numpy(), tokens

    def unit(vector):
        norm = np.linalg.norm(vector)
        return vector / norm if normalize and norm > 0 else vector

    rows = [i for i, r in enumerate(pool) if r[0] in landmarks]
    plain = {sid: gradient(messages, True) for sid, messages, _ in pool}
    landmark_grads = np.stack([unit(plain[pool[i][0]][0]) for i in rows])
    target_grads = np.stack([unit(gradient(m, False)[0]) for (m,) in targets])
    p_landmarks = landmark_grads @ target_grads.T
    embeddings = np.array([r[2] for r in pool], dtype=np.float64)
    squared = [
        ((embeddings[rows[i]] - embeddings[rows[j]]) ** 2).sum()
        for i in range(len(rows))
        for j in range(i + 1, len(rows))
    ]
    sigma = np.sqrt(sorted(squared)[(len(squared) - 1) // 2])

    def rbf(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2))

    scores = []
    for target in range(len(targets)):  # the released loop: one KRR per target sample
        kernel = rbf(embeddings[rows], embeddings[rows])
        kernel += 1e-2 * np.mean(np.diag(kernel)) * np.eye(len(rows))
        scores.append(rbf(embeddings, embeddings[rows]) @ np.linalg.solve(kernel, p_landmarks[:, target]))
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    while len(picked) < k:
        for target in rng.permutation(len(scores)):
            if len(picked) >= k:
                break
            best = int(np.argmax(scores[target]))
            picked.append(best)
            for column in scores:
                column[best] = -1e8
    first_target = gradient(targets[0][0], False)[0]
    facts = {}
    for sid, (direction, tokens) in plain.items():
        norm = np.linalg.norm(direction)
        raw = float(direction @ first_target)
        facts[sid] = (tokens, norm, raw / (norm * np.linalg.norm(first_target)) if norm else 0.0, raw)
    return [pool[i][0] for i in picked], facts


def test_normalisation_changes_the_picks_and_both_equal_the_released_algorithm(tmp_path, tiny_lm):
    """One target sample, budget 1: unit-normalised (released) directions pick a long sample with
    the higher cosine; raw inner products pick a short one whose mean-token loss has a larger
    gradient norm but a lower cosine. Both equal the released algorithm's plain loop."""
    import json

    write_pool(tmp_path / "pool.jsonl", 20)
    words = (
        "the answer is one two three and that is it for this question you are what how why write explain "
        "the code list four five yes no"
    ).split()
    target = {"instruction": "explain the answer q1", "input": "", "output": " ".join(words)}
    related = {"instruction": "explain the answer q0", "input": "", "output": " ".join(words[:8] + ["hello"] * 20)}
    shorts = [
        {"instruction": f"explain the answer {w}", "input": "", "output": w}
        for w in ("the", "answer", "one", "yes", "no", "is", "what", "code")
    ]
    with (tmp_path / "pool.jsonl").open("a") as pool:
        pool.writelines(json.dumps(record) + "\n" for record in [related, *shorts])
    (tmp_path / "target.jsonl").write_text(json.dumps(target) + "\n")
    document = pipeline(tiny_lm, budget=1, landmarks=30)
    released = document["attributes"]["selections"][0]
    for key in ("fraction", "projection", "dim"):
        released.pop(key)  # the defaults: Hadamard, 32,768 dims (all 4,096 down_proj weights here)
    released["targets"] = [{"name": "task", "path": "target.jsonl", "validation_size": 1}]
    document["attributes"]["selections"].append({**released, "name": "raw", "normalize": False})
    run_document(tmp_path, document)

    with DuckDBStore(tmp_path / "infdist.duckdb").reader(read_only=True) as con:
        members = {
            name: [
                r[0]
                for r in con.execute(
                    "SELECT sample_id FROM selections WHERE selection = $s ORDER BY rank", {"s": name}
                ).fetchall()
            ]
            for name in ("influential", "raw")
        }
    expected, facts = released_selection(tiny_lm, tmp_path, "influential", normalize=True, k=1)
    expected_raw, _ = released_selection(tiny_lm, tmp_path, "raw", normalize=False, k=1)
    assert members["influential"] == expected and members["raw"] == expected_raw
    (unit_pick,), (raw_pick,) = expected, expected_raw
    tokens, norm, cosine, _ = facts[unit_pick]
    raw_tokens, raw_norm, raw_cosine, _ = facts[raw_pick]
    assert raw_tokens < tokens and raw_norm > norm and raw_cosine < cosine


def test_released_defaults_over_several_target_samples_equal_the_released_algorithm(tmp_path, tiny_lm):
    """Six target samples in two subtasks, budget 5: the KRR per target sample and the shuffled
    round robin over target samples (not the subtask means) decide the picks."""
    write_pool(tmp_path / "pool.jsonl", 20)
    write_targets(tmp_path / "target.jsonl")
    document = pipeline(tiny_lm, budget=5)
    released = document["attributes"]["selections"][0]
    for key in ("fraction", "projection", "dim"):
        released.pop(key)
    run_document(tmp_path, document)
    with DuckDBStore(tmp_path / "infdist.duckdb").reader(read_only=True) as con:
        members = [
            r[0]
            for r in con.execute(
                "SELECT sample_id FROM selections WHERE selection = 'influential' ORDER BY rank"
            ).fetchall()
        ]
        roles = con.execute(
            "SELECT count(DISTINCT role) FROM selection_details WHERE selection = 'influential'"
        ).fetchall()[0][0]
    expected, _ = released_selection(tiny_lm, tmp_path, "influential", normalize=True, k=5)
    assert members == expected
    assert roles > 2  # picked by more target samples than there are subtasks


def test_every_released_or_project_option_changes_the_config_hash_and_second_order_needs_subtasks():
    from pydantic import ValidationError

    from curation_assets.stages.influence.influence_distillation import (
        INFLUENCE_DISTILLATION,
        InfluenceDistillationSpec,
    )

    base = {
        "name": "infl",
        "kind": "influence_distillation",
        "jvp": "jvp",
        "warmup": "warmup",
        "budget": 5,
        "targets": [{"name": "t", "path": "t.jsonl"}],
    }

    def digest(**options):
        spec = InfluenceDistillationSpec(**base, **options)
        return INFLUENCE_DISTILLATION.config_hash(spec, {"warmup": "0" * 16})

    defaults = digest()
    assert (
        digest(
            params=["down_proj"],
            normalize=True,
            round_robin="targets",
            adam_direction="released",
            exact_landmarks=False,
            dim=32768,
        )
        == defaults
    )
    changed = [
        digest(params="lora"),
        digest(params=["down_proj", "o_proj"]),
        digest(normalize=False),
        digest(round_robin="subtasks"),
        digest(adam_direction="less"),
        digest(exact_landmarks=True),
        digest(dim=8192),
    ]
    assert len({defaults, *changed}) == 1 + len(changed)
    assert digest(batch_size=1) == defaults
    with pytest.raises(ValidationError, match="round_robin: subtasks"):
        InfluenceDistillationSpec(**base, order="second")
    with pytest.raises(ValidationError, match="params"):
        InfluenceDistillationSpec(**base, params=[])
