"""DEITA scorers end to end: training on evol labels whose true scores are known, scoring every
sample, and published-format scorers (causal LMs read by their digit-token expectation)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation_assets.models.causal_lm import file_sha256
from curation_assets.models.digit_scorer import COMPLEXITY_TEMPLATE, QUALITY_TEMPLATE
from curation_assets.models.embeddings import resolve_embedding_model
from curation_assets.store import DuckDBStore
from tests.components.scorer_fixtures import evol_rows, materialize_with_labels, seed_records
from tests.support.files import write_jsonl
from tests.support.models import build_tiny_causal_lm
from tests.support.pipelines import pipeline_document

CONVERSATION = {
    "messages": [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And a fruit, with a reason?"},
        {"role": "assistant", "content": "An apple, because it keeps well."},
    ]
}
DIGITS = ("1", "2", "3", "4", "5", "6")


def document(stages: list[dict]) -> dict:
    return pipeline_document("deita", stages=stages)


def labels_for(seed_instructions: set[str]):
    def rows_for(samples: dict) -> list[dict]:
        seeds = {sid: texts for sid, texts in samples.items() if texts[0] in seed_instructions}
        rows = evol_rows(seeds)
        for sid, (instruction, response) in samples.items():  # the others: the judge's ranking did not parse
            if sid not in seeds:
                rows += [
                    {
                        "sample_id": sid,
                        "dimension": d,
                        "variant": 0,
                        "operation": "seed",
                        "instruction": instruction,
                        "response": response,
                        "score": None,
                        "status": "unparseable",
                    }
                    for d in ("complexity", "quality")
                ]
        return rows

    return rows_for


def query(folder: Path, sql: str):
    with DuckDBStore(folder / "deita.duckdb").reader(read_only=True) as con:
        return con.execute(sql).fetchall()


def test_embedding_head_scorers_learn_the_known_scores_and_score_every_sample(tmp_path):
    seeds = seed_records(40)
    write_jsonl(
        tmp_path / "pool.jsonl", [*seeds, CONVERSATION, {"instruction": "Say nothing.", "input": "", "output": ""}]
    )
    stages = [
        {"name": "evol", "kind": "deita_evol"},
        {"name": "scorers", "kind": "deita_scorer_train", "labels": "evol", "heldout_fraction": 0.25, "seed": 3},
        {"name": "deita", "kind": "deita_scores", "scorer": "scorers"},
    ]
    # through Dagster: the trained-scorer family's Dagster run (the other tests use the runner)
    materialize_with_labels(
        tmp_path, document(stages), "evol", "deita_evol", labels_for({r["instruction"] for r in seeds}), dagster=True
    )

    trained = {
        r[0]: r[1:]
        for r in query(
            tmp_path,
            "SELECT scorer, backend, path, files, n_train, n_heldout, heldout_spearman, details FROM trained_scorers",
        )
    }
    assert set(trained) == {"complexity", "quality"}
    for scorer, (backend, path, files, n_train, n_heldout, rho, _details) in trained.items():
        assert backend == "embedding_head" and (n_train, n_heldout) == (30 * 6, 10 * 6)
        assert rho > 0.6, f"{scorer}: held-out Spearman {rho}"  # chance is 0
        for name, digest in json.loads(files).items():
            assert file_sha256(Path(path) / name) == digest
    splits = dict(query(tmp_path, "SELECT split, count(*) FROM deita_scorer_train GROUP BY 1"))
    assert splits == {"train": 30, "heldout": 10, "unlabelled": 2}
    (stats,) = query(tmp_path, "SELECT stats FROM stage_runs WHERE stage = 'scorers'")[0]
    assert json.loads(stats)["complexity_heldout_spearman"] == trained["complexity"][5]

    # independent scoring: the saved ridge weights on embeddings computed here
    encoder = SentenceTransformer(resolve_embedding_model("packaged:all-MiniLM-L6-v2"), device="cpu")
    heads = {}
    for scorer in ("complexity", "quality"):
        with np.load(Path(trained[scorer][1]) / "head.npz") as arrays:
            heads[scorer] = (arrays["weights"], float(arrays["bias"]))

    def predict(scorer: str, *texts: str) -> float:
        x = np.concatenate([encoder.encode([t], normalize_embeddings=True)[0] for t in texts])
        return float(x @ heads[scorer][0] + heads[scorer][1])

    rows = query(
        tmp_path,
        "SELECT s.instruction, s.output, s.n_turns, d.complexity, d.quality, d.score, "
        "d.turn_complexity, d.turn_quality, d.status FROM deita d JOIN samples s USING (sample_id)",
    )
    assert len(rows) == 42 and {r[8] for r in rows} == {"ok"}
    for instruction, output, n_turns, c, q, score, turn_c, turn_q, _ in rows[:6] + [r for r in rows if r[2] == 2]:
        if n_turns == 2:  # each user turn on its own, summed over turns
            turns = [("Name a colour.", "Blue."), ("And a fruit, with a reason?", "An apple, because it keeps well.")]
        else:
            turns = [(instruction, output)]
        expected_c = [predict("complexity", i) for i, _ in turns]
        expected_q = [predict("quality", i, r) for i, r in turns]
        assert turn_c == pytest.approx(expected_c, abs=1e-4) and turn_q == pytest.approx(expected_q, abs=1e-4)
        assert c == pytest.approx(np.mean(expected_c), abs=1e-4) and q == pytest.approx(np.mean(expected_q), abs=1e-4)
        assert score == pytest.approx(sum(a * b for a, b in zip(expected_c, expected_q)), abs=1e-3)
    assert query(tmp_path, "SELECT count(*), count(score) FROM deita") == [(42, 42)]  # the stage's view

    # a new sample: no retraining, one new row per stage, the same scorer files
    write_jsonl(
        tmp_path / "pool.jsonl",
        [
            *seeds,
            CONVERSATION,
            {"instruction": "Say nothing.", "input": "", "output": ""},
            {"instruction": "Write a haiku.", "input": "", "output": "Snow."},
        ],
    )
    materialize_with_labels(tmp_path, document(stages), "evol", "deita_evol", labels_for(set()))
    runs = query(
        tmp_path, "SELECT stage, rows_in, stats FROM stage_runs WHERE stage IN ('scorers', 'deita') ORDER BY started_at"
    )
    assert [(r[0], r[1]) for r in runs] == [("scorers", 42), ("deita", 42), ("scorers", 1), ("deita", 1)]
    assert json.loads(runs[2][2])["trained"] is False
    assert query(
        tmp_path,
        "SELECT split FROM deita_scorer_train JOIN samples USING (sample_id) WHERE instruction = 'Write a haiku.'",
    ) == [("added_later",)]
    assert query(tmp_path, "SELECT count(*) FROM trained_scorers") == [(2,)]


def _hand_score(model, tokenizer, prompt: str) -> float:
    ids = tokenizer(prompt)["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    digit_logits = [logits[tokenizer.convert_tokens_to_ids(d)].item() for d in DIGITS]
    weights = [math.exp(v) for v in digit_logits]
    return sum((k + 1) * w for k, w in enumerate(weights)) / sum(weights)


def test_published_scorer_format_by_local_path_and_failures_recorded(tmp_path):
    complexity_model = build_tiny_causal_lm(tmp_path, extra_words=DIGITS, name="complexity_scorer")
    broken = build_tiny_causal_lm(tmp_path, extra_words=DIGITS, name="broken_scorer")
    nan_model = AutoModelForCausalLM.from_pretrained(broken)
    with torch.no_grad():
        nan_model.get_output_embeddings().weight[:] = float("nan")
    nan_model.save_pretrained(broken)
    records = [
        {"instruction": "what is the answer", "input": "q1 q2", "output": "yes"},
        {"instruction": "write code", "input": "", "output": "no it is a list of one two three"},
        CONVERSATION,
    ]
    write_jsonl(tmp_path / "pool.jsonl", records)
    stages = [
        {
            "name": "published",
            "kind": "deita_scores",
            "complexity_model": str(complexity_model),
            "quality_model": str(complexity_model),
            "batch_size": 2,
        },
        {
            "name": "broken",
            "kind": "deita_scores",
            "complexity_model": str(complexity_model),
            "quality_model": str(broken),
        },
    ]
    from tests.support.runs import run_document

    run_document(tmp_path, document(stages))
    model = AutoModelForCausalLM.from_pretrained(complexity_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(complexity_model)
    rows = query(
        tmp_path,
        "SELECT s.instruction, s.input, s.output, s.n_turns, d.turn_complexity, d.turn_quality, "
        "d.score, d.status FROM published d JOIN samples s USING (sample_id)",
    )
    assert len(rows) == 3
    for instruction, input_text, output, n_turns, turn_c, turn_q, score, status in rows:
        if n_turns == 2:
            turns = [("Name a colour.", "Blue."), ("And a fruit, with a reason?", "An apple, because it keeps well.")]
        else:
            turns = [(instruction + (f"\n\n{input_text}" if input_text else ""), output)]
        expected_c = [_hand_score(model, tokenizer, COMPLEXITY_TEMPLATE.replace("{instruction}", i)) for i, _ in turns]
        expected_q = [
            _hand_score(model, tokenizer, QUALITY_TEMPLATE.replace("{instruction}", i).replace("{output}", r))
            for i, r in turns
        ]
        assert turn_c == pytest.approx(expected_c, abs=1e-5) and turn_q == pytest.approx(expected_q, abs=1e-5)
        assert score == pytest.approx(sum(a * b for a, b in zip(expected_c, expected_q)), abs=1e-4)
        assert status == "ok" and all(1 <= v <= 6 for v in turn_c + turn_q)

    failed = query(tmp_path, "SELECT complexity, quality, score, status, failure, n_failed, n_turns FROM broken")
    assert len(failed) == 3
    for complexity, quality, score, status, failure, n_failed, n_turns in failed:
        assert complexity is not None and quality is None and score is None  # no default value
        assert status == "failed" and n_failed == n_turns and failure == "quality: scorer output not finite"


def test_scorer_keys_are_checked_at_load_time(tmp_path):
    from curation_assets.components.standalone import load_pipeline_file

    write_jsonl(tmp_path / "pool.jsonl", seed_records(3))
    bad = [
        ([{"name": "d", "kind": "deita_scores", "complexity_model": "x"}], "both `complexity_model`"),
        ([{"name": "t", "kind": "deita_scorer_train", "labels": "nothing_here"}], "nothing_here"),
        (
            [{"name": "e", "kind": "lm_loss"}, {"name": "t", "kind": "deita_scorer_train", "labels": "e"}],
            "not a deita_evol stage",
        ),
        (
            [
                {"name": "e", "kind": "deita_evol"},
                {"name": "t", "kind": "deita_scorer_train", "labels": "e", "lora": {"r": 4}},
            ],
            "backend 'causal_lm'",
        ),
        (
            [
                {"name": "e", "kind": "deita_evol"},
                {
                    "name": "t",
                    "kind": "deita_scorer_train",
                    "labels": "e",
                    "backend": "causal_lm",
                    "complexity_template": "no placeholder",
                },
            ],
            "complexity template",
        ),
    ]
    import yaml

    for stages, message in bad:
        path = tmp_path / "defs.yaml"
        path.write_text(yaml.safe_dump(document(stages)))
        with pytest.raises(Exception, match=message):
            load_pipeline_file(path)


WORDS = "the a of to is and in it you that for on with as are this be what how why".split()
HARD = ["q1", "q2", "q3", "q4", "q5"]  # each evolution step adds one: the known complexity
GOOD = ["yes", "one", "two", "three", "four"]  # each quality step adds one


def confident_tiny_scorer(folder: Path) -> Path:
    """The tiny random Llama with its LM head scaled up, so its logits can become confident
    (at the default init scale every logit is ~0 and learning a digit takes hundreds of steps)."""
    path = build_tiny_causal_lm(folder, extra_words=DIGITS, name="confident_scorer")
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(25)
    model.save_pretrained(path)
    return path


def test_causal_lm_backend_learns_digits_and_scores_with_its_adapters(tmp_path):
    import random

    base = confident_tiny_scorer(tmp_path)
    rng = random.Random(0)
    seeds = [
        {"instruction": " ".join(rng.sample(WORDS, 4)), "input": "", "output": " ".join(rng.sample(WORDS, 3))}
        for _ in range(30)
    ]
    write_jsonl(tmp_path / "pool.jsonl", seeds)

    def rows_for(samples: dict) -> list[dict]:
        rows = []
        for sid, (instruction, response) in sorted(samples.items()):
            for k in range(6):
                rows.append(
                    {
                        "sample_id": sid,
                        "dimension": "complexity",
                        "variant": k,
                        "operation": "x",
                        "instruction": " ".join([instruction, *HARD[:k]]),
                        "response": None,
                        "score": float(k + 1),
                        "status": "ok",
                    }
                )
                rows.append(
                    {
                        "sample_id": sid,
                        "dimension": "quality",
                        "variant": k,
                        "operation": "x",
                        "instruction": instruction,
                        "response": " ".join([response, *GOOD[:k]]),
                        "score": float(k + 1),
                        "status": "ok",
                    }
                )
        return rows

    lora = {
        "r": 8,
        "alpha": 16,
        "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "lr": 0.01,
        "epochs": 4,
        "batch_size": 8,
        "warmup_ratio": 0.0,
    }
    stages = [
        {"name": "evol", "kind": "deita_evol"},
        {
            "name": "scorers",
            "kind": "deita_scorer_train",
            "labels": "evol",
            "backend": "causal_lm",
            "model": str(base),
            "max_length": 64,
            "lora": lora,
        },
        {"name": "deita", "kind": "deita_scores", "scorer": "scorers", "batch_size": 4},
    ]
    materialize_with_labels(tmp_path, document(stages), "evol", "deita_evol", rows_for)

    trained = {
        r[0]: r[1:]
        for r in query(
            tmp_path, "SELECT scorer, backend, path, files, n_train, n_heldout, heldout_spearman FROM trained_scorers"
        )
    }
    for scorer, (backend, path, files, n_train, n_heldout, rho) in trained.items():
        assert backend == "causal_lm" and (n_train, n_heldout) == (24 * 6, 6 * 6)
        assert rho > 0.6, f"{scorer}: held-out Spearman {rho}"
        assert {"adapter_model.safetensors", "adapter_config.json", "scorer.json"} <= set(json.loads(files))
        for name, digest in json.loads(files).items():
            assert file_sha256(Path(path) / name) == digest

    # independent scoring: the saved adapter on the base model, one unpadded full forward per prompt
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(base)
    scorers = {
        d: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), trained[d][1]).eval()
        for d in ("complexity", "quality")
    }
    rows = query(
        tmp_path,
        "SELECT s.instruction, s.output, d.complexity, d.quality, d.score "
        "FROM deita d JOIN samples s USING (sample_id)",
    )
    assert len(rows) == 30
    for instruction, output, complexity, quality, score in rows[:8]:
        c = _hand_score(scorers["complexity"], tokenizer, COMPLEXITY_TEMPLATE.replace("{instruction}", instruction))
        q = _hand_score(
            scorers["quality"],
            tokenizer,
            QUALITY_TEMPLATE.replace("{instruction}", instruction).replace("{output}", output),
        )
        assert (complexity, quality, score) == pytest.approx((c, q, c * q), abs=1e-4)


def test_training_without_parsed_labels_fails_with_the_reason(tmp_path):
    write_jsonl(tmp_path / "pool.jsonl", seed_records(3))
    stages = [
        {"name": "evol", "kind": "deita_evol"},
        {"name": "scorers", "kind": "deita_scorer_train", "labels": "evol"},
    ]
    with pytest.raises(Exception, match=r"0 scored complexity labels.*'unparseable': 3"):
        materialize_with_labels(tmp_path, document(stages), "evol", "deita_evol", labels_for(set()))
    assert query(tmp_path, "SELECT count(*) FROM trained_scorers") == [(0,)]
