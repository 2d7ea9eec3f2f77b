"""Influence Distillation through Dagster on a tiny random Llama: JVP embeddings, landmark
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
from tests.components.test_less_pipeline import LORA, write_targets
from tests.components.test_lm_pipeline import tiny_lm, write_pool  # noqa: F401  (fixture)
from tests.pipeline_runs import materialize_document


def pipeline(tiny_lm, **selection):
    return {"type": "curation_assets.CurationPipeline", "attributes": {
        "name": "infdist", "duckdb_path": "infdist.duckdb", "sources": [{"name": "pool", "path": "pool.jsonl"}],
        "automation": {"condition": "none"},
        "stages": [
            {"name": "warmup", "kind": "lora_warmup", "model": str(tiny_lm), "max_length": 64,
             "train_fraction": 0.3, "lora": LORA},
            {"name": "jvp", "kind": "jvp_embeddings", "model": str(tiny_lm), "max_length": 64, "num_blocks": 1,
             "batch_size": 4}],
        "selections": [{"name": "influential", "kind": "influence_distillation", "jvp": "jvp", "warmup": "warmup",
                        "fraction": 0.25, "landmarks": 8, "projection": "dense", "dim": 64, "batch_size": 4,
                        "targets": [{"name": "task", "path": "target.jsonl", "subtask_field": "cat",
                                     "validation_size": 6, "split_seed": 1}], **selection}]}}


def test_influence_distillation_equals_an_independent_computation(tmp_path, tiny_lm):  # noqa: F811
    from sklearn.kernel_ridge import KernelRidge

    write_pool(tmp_path / "pool.jsonl", 20)
    write_targets(tmp_path / "target.jsonl")
    materialize_document(tmp_path, pipeline(tiny_lm))

    with DuckDBStore(tmp_path / "infdist.duckdb").reader(read_only=True) as con:
        path = con.execute("SELECT path FROM lora_checkpoints ORDER BY epoch DESC LIMIT 1").fetchall()[0][0]
        pool = con.execute("SELECT s.sample_id, s.messages, j.embedding FROM samples AS s JOIN jvp_embeddings AS j "
                           "USING (sample_id) WHERE s.active ORDER BY s.sample_id").fetchall()
        targets = con.execute("SELECT sample_id, subtask, messages FROM target_samples "
                              "WHERE split = 'validation'").fetchall()
        landmarks = {r[0] for r in con.execute("SELECT DISTINCT sample_id FROM influence_scores "
                                               "WHERE selection = 'influential' AND landmark").fetchall()}
        influence = {(sid, sub): value for sid, sub, value in con.execute(
            "SELECT sample_id, subtask, influence FROM influence_scores").fetchall()}
        members = [r[0] for r in con.execute("SELECT sample_id FROM selections WHERE selection = 'influential' "
                                             "ORDER BY rank").fetchall()]
        weights = con.execute("SELECT sum(weight), count(*) FILTER (weight > 0) FROM influence_scores "
                              "GROUP BY subtask").fetchall()
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
            if precondition:
                g = adam_precondition(g.unsqueeze(0), state["state"][index]["exp_avg"],
                                      state["state"][index]["exp_avg_sq"])[0]
            flat.append(g.reshape(-1))
        return projector.project(torch.cat(flat).unsqueeze(0))[0].double().numpy()

    rows = [i for i, r in enumerate(pool) if r[0] in landmarks]
    landmark_grads = np.stack([gradient(pool[i][1], True) for i in rows])
    target_grads = np.stack([gradient(m, False) for _, _, m in targets])
    exact = landmark_grads @ target_grads.T
    embeddings = np.array([r[2] for r in pool], dtype=np.float64)
    sigma = np.median(pdist(embeddings[rows]))
    krr = KernelRidge(alpha=1e-2, kernel="rbf", gamma=1 / (2 * sigma ** 2)).fit(embeddings[rows], exact)
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


def test_second_order_and_kcenter_landmarks_run_end_to_end(tmp_path, tiny_lm):  # noqa: F811
    write_pool(tmp_path / "pool.jsonl", 20)
    write_targets(tmp_path / "target.jsonl")
    materialize_document(tmp_path, pipeline(tiny_lm, order="second", landmark_selection="kcenter",
                                            optimizer="sgd", learning_rate=1.0, projection="hadamard"))
    with DuckDBStore(tmp_path / "infdist.duckdb").reader(read_only=True) as con:
        members = con.execute("SELECT count(*), min(score) FROM selections "
                              "WHERE selection = 'influential'").fetchall()[0]
        stats = con.execute("SELECT stats FROM stage_runs WHERE stage = 'influential'").fetchall()[0][0]
    assert members[0] == 5 and members[1] > 0
    assert '"order": "second"' in stats
