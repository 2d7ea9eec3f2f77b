"""Instruction Mining through the runner on tiny random models: indicators checked against
independent computations, the fit against a refit by the normal equations and a fresh
fine-tune, the predictions against the stored rule, and top_score on the predicted loss."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation_assets.components.standalone import load_pipeline_file
from curation_assets.models.chat_format import encode_conversation
from curation_assets.models.lora import LoraSettings, attach_lora, lora_finetune
from curation_assets.stages.core.targets import TargetSpec, read_target
from tests.components.test_less_pipeline import write_targets
from tests.methods.test_mtld import reference as mtld_reference
from tests.support.files import WORDS, write_jsonl
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_document

LORA = {
    "r": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ["q_proj", "v_proj"],
    "lr": 0.05,
    "epochs": 1,
    "batch_size": 4,
    "warmup_ratio": 0.0,
}
USE = ["output_length", "perplexity", "mtld", "knn", "lengths.instruction_chars"]


def write_pool(path: Path, n: int) -> None:
    """Alpaca records whose outputs repeat words (MTLD defined) except every fifth (all distinct:
    MTLD undefined), plus an empty output."""
    rng = np.random.default_rng(7)
    records = []
    for i in range(n):
        instruction = " ".join(rng.choice(WORDS, size=3 + i % 7))
        vocabulary = WORDS[: 3 + i % 9] if i % 5 else WORDS
        output = " ".join(rng.choice(vocabulary, size=4 + i % 13, replace=bool(i % 5)))
        records.append({"instruction": f"q{i % 10} {instruction}", "input": "", "output": output})
    records.append({"instruction": "q1 hello", "input": "", "output": ""})
    write_jsonl(path, records)


def document(lm: Path, sentence_model: Path) -> dict:
    return pipeline_document(
        "mining",
        stages=[
            {
                "name": "embed",
                "kind": "embedding",
                "model": str(sentence_model),
                "template": "{instruction}\n{output}",
            },
            {"name": "lengths", "kind": "text_stats"},
            {"name": "loss", "kind": "lm_loss", "model": str(lm), "max_length": 64, "input_selection": "scored"},
            {
                "name": "ind",
                "kind": "instruction_mining_indicators",
                "embedding": "embed",
                "perplexity": "loss",
                "reward": {"stage": "lengths", "column": "output_chars"},
                "extra_scores": [{"stage": "lengths", "column": "instruction_chars"}],
            },
            {
                "name": "rule",
                "kind": "instruction_mining_fit",
                "indicators": "ind",
                "use": USE,
                "model": str(lm),
                "max_length": 64,
                "subsets": 9,
                "subset_size": 8,
                "seed": 3,
                "lora": LORA,
                "target": {"name": "task", "path": "target.jsonl", "validation_size": 6, "split_seed": 1},
            },
        ],
        selections=[
            {"name": "scored", "kind": "random", "budget": 30, "seed": 0},
            {
                "name": "lowest_predicted_loss",
                "kind": "top_score",
                "stage": "rule",
                "column": "predicted_loss",
                "order": "ascending",
                "budget": 5,
            },
        ],
        source_format="alpaca",
    )


def test_instruction_mining_end_to_end(tmp_path, tiny_lm, tiny_sentence_model):
    write_pool(tmp_path / "pool.jsonl", 40)
    write_targets(tmp_path / "target.jsonl")
    component = run_document(tmp_path, document(tiny_lm, tiny_sentence_model))
    with component.store.reader() as con:
        rows = con.execute(
            "SELECT i.sample_id, i.input_length, i.output_length, i.reward, i.perplexity, i.mtld, i.knn, "
            "i.knn_pool, i.extra, i.missing, s.instruction, s.input, s.output, t.output_chars, "
            "t.instruction_chars, l.perplexity, e.embedding "
            "FROM instruction_mining_indicators i JOIN samples s USING (sample_id) "
            "JOIN text_stats t USING (sample_id) JOIN embeddings e USING (sample_id) "
            "LEFT JOIN lm_loss l USING (sample_id) ORDER BY i.sample_id"
        ).fetchall()
        subsets = con.execute(
            "SELECT subset, sample_ids, mean_indicators, validation_loss FROM "
            "instruction_mining_subsets ORDER BY subset"
        ).fetchall()
        terms = dict(con.execute("SELECT term, coefficient FROM instruction_mining_coefficients").fetchall())
        imputation = dict(con.execute("SELECT term, imputation_value FROM instruction_mining_coefficients").fetchall())
        fit = con.execute(
            "SELECT r_squared, base_validation_loss, indicators, validation_samples FROM instruction_mining_fits"
        ).fetchall()[0]
        predictions = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT sample_id, predicted, predicted_loss, imputed FROM instruction_mining_predictions"
            ).fetchall()
        }
        chosen = [
            r[0]
            for r in con.execute(
                "SELECT sample_id FROM selections WHERE selection = 'lowest_predicted_loss' ORDER BY rank"
            ).fetchall()
        ]
        wide = con.execute("SELECT ind__mtld, rule__predicted_loss FROM sample_scores").fetchall()
    assert len(rows) == 41 and len(wide) == 41

    # ---- indicators, each against an independent computation -----------------------------------
    embeddings = np.array([r[16] for r in rows], dtype=np.float64)
    distances = np.sqrt(((embeddings[:, None] - embeddings[None]) ** 2).sum(-1))
    np.fill_diagonal(distances, np.inf)
    for i, (
        _sid,
        in_len,
        out_len,
        reward,
        ppl,
        mtld,
        knn,
        knn_pool,
        extra,
        missing,
        instruction,
        input_,
        output,
        output_chars,
        instruction_chars,
        lm_ppl,
        _,
    ) in enumerate(rows):
        assert in_len == len(f"{instruction}\n{input_}".split()) and out_len == len(output.split())
        assert reward == output_chars and dict(extra) == {"lengths.instruction_chars": instruction_chars}
        expected_mtld = mtld_reference(output.lower().split())
        assert (mtld is None) == math.isnan(expected_mtld) and (mtld is None or mtld == pytest.approx(expected_mtld))
        assert knn == pytest.approx(np.sort(distances[i])[:6].mean(), rel=1e-4) and knn_pool == 41
        assert ppl == lm_ppl  # NULL where the lm_loss stage did not score the sample
        assert sorted(missing) == sorted(
            (["perplexity"] if lm_ppl is None else []) + (["mtld"] if mtld is None else [])
        )
    assert sum(r[4] is None for r in rows) == 11 and any(r[5] is None for r in rows)  # empty output: no MTLD

    # ---- the fit: subset means, then least squares on log(validation loss) ----------------------
    by_id = {r[0]: r for r in rows}
    columns = {"output_length": 2, "perplexity": 4, "mtld": 5, "knn": 6}

    def value(row, name):
        if name == "lengths.instruction_chars":
            return float(row[14])
        v = row[columns[name]]
        return np.nan if v is None else float(v)

    means = np.array(
        [[np.nanmean([value(by_id[sid], name) for sid in ids]) for name in USE] for _, ids, _, _ in subsets]
    )
    for (_, ids, stored, _), row in zip(subsets, means):
        assert len(ids) == 8 and [dict(stored)[name] for name in USE] == pytest.approx(row.tolist())
    losses = np.array([s[3] for s in subsets])
    design = np.column_stack([np.ones(len(subsets)), means])
    beta = np.linalg.solve(design.T @ design, design.T @ np.log(losses))
    assert [terms["(intercept)"], *[terms[n] for n in USE]] == pytest.approx(beta.tolist(), rel=1e-6, abs=1e-9)
    residuals = np.log(losses) - design @ beta
    assert fit[0] == pytest.approx(1 - residuals @ residuals / ((np.log(losses) - np.log(losses).mean()) ** 2).sum())
    assert fit[2] == USE and fit[3] == 6 and np.ptp(losses) > 0

    # ---- validation losses: base model, and subset 0 fine-tuned again from a fresh model --------
    validation = read_target(
        TargetSpec(name="task", path=str(tmp_path / "target.jsonl"), validation_size=6, split_seed=1),
        tmp_path / "target_check",
    )
    messages = [
        m
        for m, s in zip(validation.column("messages").to_pylist(), validation.column("split").to_pylist())
        if s == "validation"
    ]
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)

    def validation_loss(model) -> float:
        model.eval()
        values = []
        for turns in messages:
            sample = encode_conversation(tokenizer, turns, 64)
            with torch.no_grad():
                values.append(
                    model(input_ids=torch.tensor([sample.input_ids]), labels=torch.tensor([sample.labels])).loss.item()
                )
        return float(np.mean(values))

    assert fit[1] == pytest.approx(validation_loss(AutoModelForCausalLM.from_pretrained(tiny_lm)), rel=1e-5)
    settings = LoraSettings(**LORA)
    model = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_lm), settings, 3)
    pool_messages = {
        sid: [{"role": "user", "content": row[10]}, {"role": "assistant", "content": row[12]}]
        for sid, row in by_id.items()
    }
    lora_finetune(
        model,
        [encode_conversation(tokenizer, pool_messages[sid], 64) for sid in subsets[0][1]],
        settings,
        pad_token_id=tokenizer.pad_token_id,
        seed=3,
    )
    assert subsets[0][3] == pytest.approx(validation_loss(model), rel=1e-4)

    # ---- predictions: the stored rule on each sample's indicators, NULL -> pool mean -----------
    for sid, row in by_id.items():
        x = [value(row, n) for n in USE]
        imputed = [n for n, v in zip(USE, x) if np.isnan(v)]
        x = [imputation[n] if np.isnan(v) else v for n, v in zip(USE, x)]
        expected = terms["(intercept)"] + sum(terms[n] * v for n, v in zip(USE, x))
        predicted, predicted_loss, stored_imputed = predictions[sid]
        assert predicted == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert predicted_loss == pytest.approx(math.exp(expected)) and stored_imputed == imputed
    assert imputation["perplexity"] == pytest.approx(np.nanmean([value(r, "perplexity") for r in rows]))
    assert chosen == sorted(predictions, key=lambda s: (predictions[s][1], s))[:5]

    # ---- new samples: indicators and predictions for them only, the stored rule is reused -------
    with (tmp_path / "pool.jsonl").open("a") as handle:
        handle.write(json.dumps({"instruction": "q2 why is it", "input": "", "output": "yes no yes no it is"}) + "\n")
    component = run_document(tmp_path, document(tiny_lm, tiny_sentence_model))
    with component.store.reader() as con:
        runs = con.execute(
            "SELECT stats->>'pending', stats->>'fitted' FROM stage_runs WHERE stage = 'rule' ORDER BY started_at"
        ).fetchall()
        fits = con.execute("SELECT count(*) FROM instruction_mining_fits").fetchall()[0][0]
        new = con.execute(
            "SELECT p.predicted, i.output_length, i.perplexity, i.mtld, i.knn, i.extra, i.knn_pool "
            "FROM instruction_mining_predictions p JOIN instruction_mining_indicators i "
            "USING (sample_id) JOIN samples s USING (sample_id) "
            "WHERE s.output = 'yes no yes no it is'"
        ).fetchall()
    assert runs == [("41", "true"), ("1", "false")] and fits == 1 and len(new) == 1
    predicted, out_len, ppl, mtld, knn, extra, knn_pool = new[0]
    x = [out_len, imputation["perplexity"] if ppl is None else ppl, mtld, knn, dict(extra)["lengths.instruction_chars"]]
    assert knn_pool == 42
    assert predicted == pytest.approx(terms["(intercept)"] + sum(terms[n] * v for n, v in zip(USE, x)), rel=1e-9)


def test_changing_an_upstream_stage_changes_the_dependent_hashes(tmp_path, tiny_lm, tiny_sentence_model):
    write_pool(tmp_path / "pool.jsonl", 5)
    write_targets(tmp_path / "target.jsonl")

    def hashes(edit) -> dict[str, str]:
        doc = document(tiny_lm, tiny_sentence_model)
        edit({s["name"]: s for s in doc["attributes"]["stages"]})
        path = tmp_path / "defs.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_pipeline_file(path).stage_hashes

    base = hashes(lambda s: None)
    embed = hashes(lambda s: s["embed"].update(template="{instruction}"))
    loss = hashes(lambda s: s["loss"].update(max_length=32))
    rule = hashes(lambda s: s["rule"].update(subsets=10))
    batch = hashes(lambda s: s["ind"].update(batch_size=7))
    changed = {
        name: sorted(k for k in base if base[k] != other[k])
        for name, other in (("embed", embed), ("loss", loss), ("rule", rule), ("batch", batch))
    }
    assert changed == {
        "embed": ["embed", "ind", "rule"],
        "loss": ["ind", "loss", "rule"],
        "rule": ["rule"],
        "batch": [],
    }


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["rule"].update(indicators="lengths"), "'lengths' is not an instruction_mining_indicators stage"),
        (lambda s: s["ind"].update(perplexity="lengths"), "has no perplexity column; name an lm_loss stage"),
        (lambda s: s["ind"].update(reward={"stage": "lengths", "column": "nope"}), "has no column 'nope'"),
        (lambda s: s["ind"].update(embedding="lengths"), "not an embedding stage"),
        (lambda s: s["rule"].update(subsets=5), "5 indicators need at least 7 subsets"),
        (lambda s: s["rule"]["target"].update(path="missing.jsonl"), "target file not found"),
    ],
)
def test_bad_configuration_fails_at_load_time(tmp_path, edit, message):
    write_pool(tmp_path / "pool.jsonl", 3)
    write_targets(tmp_path / "target.jsonl")
    doc = document(tmp_path / "lm", tmp_path / "st")
    edit({s["name"]: s for s in doc["attributes"]["stages"]})
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(Exception) as info:
        load_pipeline_file(path)
    assert message in str(info.value)
