"""LoBaSS `holdout` through the runner on a tiny random Llama: which reference model scored each sample,
checked by recomputing every sample's loss under each saved adapter with a plain per-sample loop
(transformers' own loss over the response tokens)."""

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support.files import write_pool
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_document

LORA = {"r": 8, "dropout": 0.0, "lr": 0.05, "epochs": 4, "batch_size": 4, "scheduler": "constant", "warmup_ratio": 0.0}


def run(tmp_path, tiny_lm, n, **lobass):
    write_pool(tmp_path / "pool.jsonl", n)
    component = run_document(
        tmp_path,
        pipeline_document(
            "lob",
            stages=[
                {
                    "name": "lobass",
                    "kind": "lobass",
                    "model": str(tiny_lm),
                    "max_length": 48,
                    "lora": LORA,
                    **lobass,
                }
            ],
        ),
    )
    with component.store.reader() as con:
        rows = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT sample_id, loss_base, loss_finetuned, learnability, in_training_set FROM lobass_scores"
            ).fetchall()
        }
        messages = dict(con.execute("SELECT sample_id, messages FROM samples WHERE active").fetchall())
        stats = json.loads(con.execute("SELECT stats FROM stage_runs WHERE stage = 'lobass'").fetchall()[0][0])
    return rows, messages, stats


def plain_losses(tiny_lm, messages, adapter=None):
    """Mean response-token cross-entropy of each sample, one unpadded sample at a time."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_lm))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm))
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()

    def ids(encoded):
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)

    losses = {}
    for sid, turns in messages.items():
        prompt = ids(tokenizer.apply_chat_template(turns[:-1], add_generation_prompt=True, tokenize=True))
        full = ids(tokenizer.apply_chat_template(turns, tokenize=True))[:48]
        labels = [-100] * len(prompt) + full[len(prompt) :]
        if all(label == -100 for label in labels[1:]):
            continue  # no response token: no loss
        with torch.no_grad():
            out = model(input_ids=torch.tensor([full]), labels=torch.tensor([labels]))
        losses[sid] = float(out.loss)
    return losses


def test_cross_fit_scores_each_sample_with_the_model_trained_on_the_other_half(tmp_path, tiny_lm):
    rows, messages, stats = run(tmp_path, tiny_lm, 15, holdout="cross_fit", train_fraction=1.0)
    assert stats["holdout"] == "cross_fit" and stats["scored_by_model_that_saw_them"] == 0
    references = stats["references"]
    assert [r["name"] for r in references] == ["half-0", "half-1"]
    trained_on = [set(json.loads(Path(r["training_ids_file"]).read_text())) for r in references]
    assert not trained_on[0] & trained_on[1] and trained_on[0] | trained_on[1] == set(messages)  # halves
    assert sum(r["scored"] for r in references) == len(rows) == len(messages)
    base = plain_losses(tiny_lm, messages)
    under = [plain_losses(tiny_lm, messages, r["checkpoints"][-1]["path"]) for r in references]
    checked = 0
    for sid, (loss_base, loss_finetuned, learnability, in_training_set) in rows.items():
        assert in_training_set  # train_fraction 1: every sample trains one of the two models
        if sid not in base:
            assert loss_finetuned is None
            continue
        own = 0 if sid in trained_on[0] else 1
        assert loss_base == pytest.approx(base[sid], rel=1e-4)
        assert loss_finetuned == pytest.approx(under[1 - own][sid], rel=1e-4)  # the other half's model
        assert abs(loss_finetuned - under[own][sid]) > 1e-3  # not the model that saw it
        assert learnability == pytest.approx(loss_base - loss_finetuned)
        checked += 1
    assert checked >= 12
    # the model that saw a sample lowers its loss more: what the hold-out keeps out of the ranking
    seen = [base[s] - under[0 if s in trained_on[0] else 1][s] for s in base]
    unseen = [base[s] - under[1 if s in trained_on[0] else 0][s] for s in base]
    assert sum(seen) / len(seen) > sum(unseen) / len(unseen)


def test_exclude_leaves_the_training_draw_unranked_and_none_records_the_bias(tmp_path, tiny_lm):
    rows, messages, stats = run(tmp_path, tiny_lm, 11, holdout="exclude", train_fraction=0.5)
    (reference,) = stats["references"]
    trained_on = set(json.loads(Path(reference["training_ids_file"]).read_text()))
    assert len(trained_on) == round(0.5 * len(messages)) and stats["excluded_from_ranking"] == len(trained_on)
    tuned = plain_losses(tiny_lm, messages, reference["checkpoints"][-1]["path"])
    for sid, (loss_base, loss_finetuned, learnability, in_training_set) in rows.items():
        assert in_training_set == (sid in trained_on)
        if sid in tuned:
            assert loss_finetuned == pytest.approx(tuned[sid], rel=1e-4)
        if sid in trained_on:
            assert learnability is None
        elif sid in tuned:
            assert learnability == pytest.approx(loss_base - loss_finetuned)
    assert stats["scored_by_model_that_saw_them"] == 0

    (tmp_path / "none").mkdir()
    rows, messages, stats = run(tmp_path / "none", tiny_lm, 11, train_fraction=0.5)  # holdout none
    assert stats["holdout"] == "none" and stats["scored_by_model_that_saw_them"] == round(0.5 * len(messages))
    assert all((learnability is None) == (base is None) for base, _, learnability, _ in rows.values())
