"""LESS through Dagster (the influence family's Dagster run) on a tiny random Llama: warm-up
checkpoints, batched preconditioned gradient features, target split and scores, checked against a
per-sample backward loop."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from curation_assets.methods.projection import DenseRademacherProjector
from curation_assets.models.chat_format import collate, encode_conversation
from curation_assets.models.gradients import per_sample_response_losses
from curation_assets.models.lora import LoraSettings, attach_lora
from curation_assets.store import DuckDBStore
from tests.support.files import write_pool
from tests.support.pipelines import LORA, lora_warmup_stage, pipeline_document, target_block
from tests.support.runs import materialize_document


def write_targets(path: Path) -> None:
    words = "the a of to is and in it you that for on with as are this".split()
    records = [
        {
            "instruction": f"t{i} {' '.join(words[i % 5 : i % 5 + 3])}",
            "input": "",
            "output": " ".join(words[i % 7 : i % 7 + 2]),
            "cat": "alpha" if i % 2 else "beta",
        }
        for i in range(10)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_less_selection_equals_a_direct_computation(tmp_path, tiny_lm):
    write_pool(tmp_path / "pool.jsonl", 20)
    write_targets(tmp_path / "target.jsonl")
    grads = {
        "name": "grads",
        "kind": "grad_features",
        "warmup": "warmup",
        "projection": "dense",
        "dim": 64,
        "batch_size": 4,
    }
    less_top = {"name": "less_top", "kind": "less", "features": "grads", "fraction": 0.25, "targets": [target_block()]}
    document = pipeline_document("less", [lora_warmup_stage(tiny_lm), grads], [less_top])
    materialize_document(tmp_path, document)

    with DuckDBStore(tmp_path / "less.duckdb").reader(read_only=True) as con:
        checkpoints = con.execute("SELECT epoch, path, mean_lr FROM lora_checkpoints ORDER BY epoch").fetchall()
        pool = con.execute("SELECT sample_id, messages FROM samples WHERE active ORDER BY sample_id").fetchall()
        trained = con.execute("SELECT count(*) FROM lora_warmup WHERE in_training_set").fetchall()[0][0]
        targets = con.execute(
            "SELECT sample_id, split, subtask, messages FROM target_samples WHERE split = 'validation'"
        ).fetchall()
        heldout = con.execute("SELECT count(*) FROM target_samples WHERE split = 'heldout'").fetchall()[0][0]
        members = con.execute(
            "SELECT sample_id, score FROM selections WHERE selection = 'less_top' ORDER BY rank"
        ).fetchall()
        details = con.execute(
            "SELECT sample_id, subtask, score FROM less_scores WHERE selection = 'less_top'"
        ).fetchall()
        n_features = con.execute("SELECT count(*) FROM grad_features").fetchall()[0][0]
        scores_rows = con.execute("SELECT count(*), count(DISTINCT sample_id) FROM sample_scores").fetchall()[0]
    assert [c[0] for c in checkpoints] == [1, 2] and trained == round(0.3 * len(pool))
    assert len(targets) == 6 and heldout == 4 and n_features == 2 * len(pool)
    assert scores_rows == (len(pool), len(pool))  # per-checkpoint rows stay out of the one-row-per-sample view

    # independent computation: one backward per sample, flattened LoRA gradients, hand preconditioning
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    model = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_lm), LoraSettings(**LORA), 0).eval()
    named = [p for _, p in model.named_parameters() if p.requires_grad]
    projector = DenseRademacherProjector(sum(p.numel() for p in named), 64, seed=0)
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    def features(messages, state=None):
        model.zero_grad(set_to_none=True)
        sample = encode_conversation(tokenizer, messages, 64)
        per_sample_response_losses(model, collate([sample], tokenizer.pad_token_id))[0].backward()
        flat = []
        for index, p in enumerate(named):
            g = p.grad
            if state is not None:  # the released code's Adam direction: m' / sqrt(v' + eps), no bias correction
                m = 0.9 * state["state"][index]["exp_avg"] + 0.1 * g
                v = 0.999 * state["state"][index]["exp_avg_sq"] + 0.001 * g * g
                g = m / torch.sqrt(v + 1e-8)
            flat.append(g.reshape(-1))
        vector = projector.project(torch.cat(flat).unsqueeze(0))[0].numpy()
        return vector / np.linalg.norm(vector)

    weights = np.array([c[2] for c in checkpoints]) / sum(c[2] for c in checkpoints)
    influence = np.zeros((len(pool), len(targets)))
    for weight, (_, path, _) in zip(weights, checkpoints):
        set_peft_model_state_dict(model, load_file(str(Path(path) / "adapter_model.safetensors")))
        state = torch.load(Path(path) / "optimizer.pt")
        train = np.stack([features(m, state) for _, m in pool])
        val = np.stack([features(m) for _, _, _, m in targets])
        influence += weight * train @ val.T
    subtasks = sorted({t[2] for t in targets})
    expected = {
        f"task:{s}": influence[:, [j for j, t in enumerate(targets) if t[2] == s]].mean(axis=1) for s in subtasks
    }
    got = {(sid, role): value for sid, role, value in details}
    for i, (sid, _) in enumerate(pool):
        for role, values in expected.items():
            assert got[(sid, role)] == pytest.approx(values[i], abs=1e-4)
    best = np.max(np.stack(list(expected.values())), axis=0)
    order = sorted(range(len(pool)), key=lambda i: -best[i])[: round(0.25 * len(pool))]
    assert [m[0] for m in members] == [pool[i][0] for i in order]
    assert [m[1] for m in members] == pytest.approx([best[i] for i in order], abs=1e-4)
