"""Selection `mods` end to end on tiny random models, each step against an independent computation:
the quality set, k-center seeds (a brute-force loop), generations (one prompt at a time with the
saved adapter), their rewards (the reward model called directly), the necessary set, the
k-center augmentation and the stored reasons."""

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from curation_assets.store import DuckDBStore
from tests.components.scorer_fixtures import write_jsonl
from tests.models_fixtures import build_tiny_causal_lm, build_tiny_reward_model, build_tiny_sentence_model
from tests.pipeline_runs import materialize_document

WORDS = "what how why write explain answer question code list one two three four five hello world yes no".split()


def records(n: int) -> list[dict]:
    rng = np.random.default_rng(5)
    return [{"instruction": " ".join(rng.choice(WORDS, 5)) + f" q{i % 10}", "input": "",
             "output": " ".join(rng.choice(WORDS, 6))} for i in range(n)]


def document(folder: Path, lm: Path, reward: Path, mods: dict | None) -> dict:
    selections = [] if mods is None else [{
        "name": "mods", "kind": "mods", "embedding": "embed", "reward": "rm", "model": str(lm), "budget": 8,
        "seed_share": 0.5, "max_length": 64, "max_new_tokens": 6, "batch_size": 3,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "lr": 0.01,
                 "epochs": 1, "batch_size": 2}, **mods}]
    return {"type": "curation_assets.CurationPipeline", "attributes": {
        "name": "m", "duckdb_path": "m.duckdb", "sources": [{"name": "pool", "path": "pool.jsonl"}],
        "automation": {"condition": "none"},
        "stages": [{"name": "embed", "kind": "embedding", "model": str(build_tiny_sentence_model(folder / "st"))},
                   {"name": "rm", "kind": "reward_scores", "model": str(reward), "max_length": 64}],
        "selections": selections}}


def query(folder: Path, sql: str) -> list[tuple]:
    with DuckDBStore(folder / "m.duckdb").reader(read_only=True) as con:
        return con.execute(sql).fetchall()


def brute_kcenter(x: np.ndarray, k: int, seed: int) -> list[int]:
    chosen = [int(np.random.default_rng(seed).integers(len(x)))]
    while len(chosen) < k:
        d = np.min(((x[:, None, :] - x[None, chosen, :]) ** 2).sum(-1), axis=1)
        chosen.append(int(np.argmax(d)))
    return chosen


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    return build_tiny_causal_lm(folder), build_tiny_reward_model(folder, "deberta")


def test_mods_steps_match_an_independent_computation(tmp_path, models):
    lm, reward = models
    write_jsonl(tmp_path / "pool.jsonl", records(30))
    materialize_document(tmp_path, document(tmp_path, lm, reward, None))
    rewards = dict(query(tmp_path, "SELECT sample_id, reward FROM rm"))
    threshold = float(np.quantile(list(rewards.values()), 0.3))
    # first pass: everything generated is necessary (threshold +inf); read the generated rewards
    materialize_document(tmp_path, document(tmp_path, lm, reward, {"reward_threshold": threshold,
                                                                   "necessity_threshold": 1e9}))
    generated = dict(query(tmp_path, "SELECT sample_id, generated_reward FROM mods_generations"))
    necessity = float(np.median(list(generated.values())))
    materialize_document(tmp_path, document(tmp_path, lm, reward, {"reward_threshold": threshold,
                                                                   "necessity_threshold": necessity}))

    ids, vectors = zip(*query(tmp_path, "SELECT sample_id, embedding FROM embed ORDER BY sample_id"))
    x = np.array(vectors, dtype=np.float32)
    quality = [i for i, sid in enumerate(ids) if rewards[sid] > threshold]
    assert 0 < len(quality) < len(ids)
    seeds = [quality[j] for j in brute_kcenter(x[quality], 4, seed=0)]
    rows = query(tmp_path, "SELECT sample_id, question, generated, generated_reward, necessary FROM mods_generations")
    assert sorted(r[0] for r in rows) == sorted(ids[i] for i in set(quality) - set(seeds))

    # generations: the saved adapter, one prompt at a time, no padding
    checkpoint = next((tmp_path / "m.artifacts" / "mods").glob("*/epoch-1"))
    tokenizer = AutoTokenizer.from_pretrained(lm)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lm), checkpoint).eval()
    scorer = AutoModelForSequenceClassification.from_pretrained(reward).eval()
    scorer_tokenizer = AutoTokenizer.from_pretrained(reward)
    texts = {r["instruction"] + " ": r for r in records(30)}
    for sid, question, text, value, necessary in rows:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                               tokenize=True, return_dict=True)["input_ids"]
        with torch.inference_mode():
            out = tuned.generate(input_ids=torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            hand = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
            inputs = scorer_tokenizer(question, text, truncation="longest_first", max_length=64, return_tensors="pt")
            hand_reward = scorer(**inputs).logits[0, 0].item()
        assert text == hand and value == pytest.approx(hand_reward, abs=1e-5)
        assert necessary == (value < necessity)
        assert question + " " in texts or question in {t.strip() for t in texts}

    necessary = [ids.index(r[0]) for r in rows if r[4]]
    necessary.sort()
    augmentation = [necessary[j] for j in brute_kcenter(x[necessary], min(4, len(necessary)), seed=0)] \
        if necessary else []
    members = query(tmp_path, "SELECT d.sample_id, d.role FROM selection_details d WHERE d.selection = 'mods'")
    assert sorted(members) == sorted([(ids[i], "seed") for i in seeds] + [(ids[i], "necessity") for i in augmentation])
    selected = {r[0] for r in query(tmp_path, "SELECT sample_id FROM selections WHERE selection = 'mods'")}
    assert selected == {ids[i] for i in seeds + augmentation}


def test_mods_names_an_empty_quality_set(tmp_path, models):
    lm, reward = models
    write_jsonl(tmp_path / "pool.jsonl", records(6))
    with pytest.raises(Exception) as raised:
        materialize_document(tmp_path, document(tmp_path, lm, reward, {"reward_threshold": 1e9}))
    assert "reward_threshold" in str(raised.value) and "mods" in str(raised.value)


def test_mods_reward_must_be_a_reward_stage(tmp_path, models):
    lm, reward = models
    write_jsonl(tmp_path / "pool.jsonl", records(6))
    with pytest.raises(Exception, match="'embed' is not a reward_scores stage"):
        materialize_document(tmp_path, document(tmp_path, lm, reward, {"reward": "embed"}))
