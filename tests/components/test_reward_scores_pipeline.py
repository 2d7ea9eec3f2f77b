"""reward_scores end to end: a Hugging Face sequence-classification reward model by local path
(tiny random DeBERTa-v2), and the offline reward head fitted to AlpaGasus judge scores."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from curation_assets.models.embeddings import resolve_embedding_model
from curation_assets.store import DuckDBStore
from tests.components.scorer_fixtures import DETAILS, TOPICS, materialize_with_labels
from tests.support.files import write_jsonl
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_document

CONVERSATION = {
    "messages": [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And a fruit?"},
        {"role": "assistant", "content": "An apple, it keeps well."},
    ]
}


def document(stages: list[dict]) -> dict:
    return pipeline_document("reward", stages=stages)


def query(folder: Path, sql: str):
    with DuckDBStore(folder / "reward.duckdb").reader(read_only=True) as con:
        return con.execute(sql).fetchall()


def test_hugging_face_reward_model_scores_pairs_like_mods(tmp_path, tiny_reward_model):
    folder = tiny_reward_model
    records = [
        {"instruction": "What is two plus two?", "input": "", "output": "Four."},
        {"instruction": "Translate to French.", "input": "good morning", "output": "bonjour"},
        {"instruction": "Explain the world.", "input": "", "output": "The world is big and round. " * 30},
        CONVERSATION,
    ]
    write_jsonl(tmp_path / "pool.jsonl", records)
    run_document(
        tmp_path,
        document([{"name": "rm", "kind": "reward_scores", "model": str(folder), "max_length": 64, "batch_size": 2}]),
    )
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def hand(question: str, answer: str) -> float:
        with torch.inference_mode():
            inputs = tokenizer(question, answer, truncation="longest_first", max_length=64, return_tensors="pt")
            return model(**inputs).logits[0, 0].item()

    rows = {
        r[0]: r[1:]
        for r in query(
            tmp_path,
            "SELECT s.instruction, r.reward, r.min_reward, r.turn_rewards, "
            "r.status, r.truncated FROM rm r JOIN samples s USING (sample_id)",
        )
    }
    assert len(rows) == 4
    assert rows["What is two plus two?"][0] == pytest.approx(hand("What is two plus two?", "Four."), abs=1e-5)
    assert rows["Translate to French."][0] == pytest.approx(
        hand("Translate to French.\ngood morning", "bonjour"), abs=1e-5
    )
    assert rows["Explain the world."][4] is True and rows["What is two plus two?"][4] is False
    turns = [
        hand("Name a colour.", "Blue."),
        hand("And a fruit?\nUser: Name a colour.\nAssistant: Blue.", "An apple, it keeps well."),
    ]
    reward, low, turn_rewards, status, _ = rows["Name a colour."]
    assert turn_rewards == pytest.approx(turns, abs=1e-5) and reward == pytest.approx(np.mean(turns), abs=1e-5)
    assert low == pytest.approx(min(turns), abs=1e-5) and status == "ok"
    assert len({round(r[0], 5) for r in rows.values()}) == 4


def test_reward_head_fitted_to_judge_scores_learns_the_known_scores(tmp_path):
    rng = random.Random(3)
    quality = {}
    records = []
    for i in range(96):
        k = rng.randint(0, 5)  # the known quality: how many useful details the answer gives
        instruction = f"Write {TOPICS[i % len(TOPICS)]}, version {i}."
        quality[instruction] = float(k)
        records.append(
            {
                "instruction": instruction,
                "input": "",
                "output": " ".join([f"Here is {TOPICS[i % len(TOPICS)]}.", *rng.sample(DETAILS, k)]),
            }
        )
    write_jsonl(tmp_path / "pool.jsonl", [*records, CONVERSATION])

    def judge_rows(samples: dict) -> list[dict]:
        rows = []
        for sid, (instruction, _) in samples.items():
            scores = [quality[instruction]] if instruction in quality else [4.0, None]
            parsed = [s for s in scores if s is not None]
            rows.append(
                {
                    "sample_id": sid,
                    "score": float(np.mean(parsed)),
                    "min_score": min(parsed),
                    "turn_scores": scores,
                    "answers": ["x"] * len(scores),
                    "status": "ok" if len(parsed) == len(scores) else "partial",
                    "n_turns_judged": len(scores),
                    "n_unparseable": len(scores) - len(parsed),
                    "truncated": False,
                }
            )
        return rows

    stages = [
        {"name": "judge", "kind": "alpagasus"},
        {"name": "rm", "kind": "reward_scores", "judge": "judge", "heldout_fraction": 0.25, "seed": 1},
    ]
    materialize_with_labels(tmp_path, document(stages), "judge", "alpagasus", judge_rows)

    ((backend, path, n_train, n_heldout, rho),) = query(
        tmp_path, "SELECT backend, path, n_train, n_heldout, heldout_spearman FROM trained_scorers"
    )
    assert backend == "embedding_head" and n_train + n_heldout == 97 and n_heldout == 24  # 24 of 97 samples
    assert rho > 0.6, f"held-out Spearman {rho}"  # chance is 0
    (stats,) = query(tmp_path, "SELECT stats FROM stage_runs WHERE stage = 'rm'")[0]
    assert json.loads(stats)["reward_heldout_spearman"] == rho

    encoder = SentenceTransformer(resolve_embedding_model("packaged:all-MiniLM-L6-v2"), device="cpu")
    with np.load(Path(path) / "head.npz") as arrays:
        weights, bias = arrays["weights"], float(arrays["bias"])
    rows = query(
        tmp_path,
        "SELECT s.instruction, s.output, r.reward, r.status FROM rm r "
        "JOIN samples s USING (sample_id) WHERE s.n_turns = 1 LIMIT 5",
    )
    for instruction, output, reward, status in rows:
        x = np.concatenate([encoder.encode([t], normalize_embeddings=True)[0] for t in (instruction, output)])
        assert reward == pytest.approx(float(x @ weights + bias), abs=1e-4) and status == "ok"
    (turn_rewards,) = query(
        tmp_path, "SELECT r.turn_rewards FROM rm r JOIN samples s USING (sample_id) WHERE s.n_turns = 2"
    )[0]
    assert len(turn_rewards) == 2


def test_reward_keys_are_checked_at_load_time(tmp_path):
    import yaml

    from curation_assets.components.standalone import load_pipeline_file

    write_jsonl(tmp_path / "pool.jsonl", [{"instruction": "a", "input": "", "output": "b"}])
    bad = [
        ([{"name": "rm", "kind": "reward_scores"}], "exactly one of `model`"),
        ([{"name": "rm", "kind": "reward_scores", "model": "x", "seed": 3}], "only apply with `judge`"),
        (
            [{"name": "e", "kind": "text_stats"}, {"name": "rm", "kind": "reward_scores", "judge": "e"}],
            "not an alpagasus stage",
        ),
    ]
    for stages, message in bad:
        path = tmp_path / "defs.yaml"
        path.write_text(yaml.safe_dump(document(stages)))
        with pytest.raises(Exception, match=message):
            load_pipeline_file(path)
