"""Selection `mods` end to end on tiny random models, each step against an independent computation:
the quality set (rewards from the reward model called directly), k-center seeds (a brute-force
loop), seeds cut to the budget, the generations (one prompt at a time with the saved adapter),
their rewards (the reward model called directly), the necessary set, the k-center augmentation,
the stored reasons and the `mods_generations` table; and the YAML errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from curation_assets.store import DuckDBStore
from tests.support.files import write_jsonl
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_document

WORDS = "what how why write explain answer question code list one two three four five hello world yes no".split()
LORA = {
    "r": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ["q_proj", "v_proj"],
    "lr": 0.01,
    "epochs": 1,
    "batch_size": 2,
}


def records(n: int) -> list[dict]:
    rng = np.random.default_rng(5)
    return [
        {
            "instruction": " ".join(rng.choice(WORDS, 5)) + f" q{i % 10}",
            "input": "",
            "output": " ".join(rng.choice(WORDS, 6)),
        }
        for i in range(n)
    ]


def mods_selection(lm: Path, **keys) -> dict:
    seeds = {} if "seed_count" in keys else {"seed_fraction": 0.5}
    return {
        "name": "mods",
        "kind": "mods",
        "embedding": "embed",
        "reward": "rm",
        "model": str(lm),
        "budget": 8,
        **seeds,
        "max_length": 64,
        "max_new_tokens": 6,
        "batch_size": 3,
        "lora": LORA,
        **keys,
    }


def document(sentence_model: Path, reward: Path, selections: list[dict]) -> dict:
    return pipeline_document(
        "m",
        stages=[
            {"name": "embed", "kind": "embedding", "model": str(sentence_model)},
            {"name": "rm", "kind": "reward_scores", "model": str(reward), "max_length": 64},
        ],
        selections=selections,
    )


def query(folder: Path, sql: str) -> list[tuple]:
    with DuckDBStore(folder / "m.duckdb").reader(read_only=True) as con:
        return con.execute(sql).fetchall()


def brute_kcenter(x: np.ndarray, k: int, seed: int) -> list[int]:
    chosen = [int(np.random.default_rng(seed).integers(len(x)))]
    while len(chosen) < k:
        d = np.min(((x[:, None, :] - x[None, chosen, :]) ** 2).sum(-1), axis=1)
        chosen.append(int(np.argmax(d)))
    return chosen


def direct_reward(reward: Path, pairs: list[tuple[str, str]]) -> list[float]:
    scorer = AutoModelForSequenceClassification.from_pretrained(reward).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward)
    with torch.inference_mode():
        return [
            scorer(**tokenizer(q, a, truncation="longest_first", max_length=64, return_tensors="pt"))
            .logits[0, 0]
            .item()
            for q, a in pairs
        ]


def members(folder: Path, selection: str) -> list[tuple[str, str]]:
    return query(
        folder,
        f"SELECT m.sample_id, d.role FROM selections m JOIN selection_details d "
        f"USING (selection, sample_id) WHERE selection = '{selection}' ORDER BY m.rank",
    )


@pytest.fixture
def models(tiny_lm, tiny_reward_model, tiny_sentence_model) -> tuple[Path, Path, Path]:
    return tiny_lm, tiny_reward_model, tiny_sentence_model


def test_mods_steps_match_an_independent_computation(tmp_path, models):
    lm, reward, sentence = models
    pool = records(30)
    write_jsonl(tmp_path / "pool.jsonl", pool)
    # (1) quality threshold from the reward model called directly: about 70% of the pool passes
    threshold = float(np.quantile(direct_reward(reward, [(r["instruction"], r["output"]) for r in pool]), 0.3))
    # pass A: every generation necessary (threshold +inf); `mods_cut` asks 10 seeds of a budget of 3
    run_document(
        tmp_path,
        document(
            sentence,
            reward,
            [
                mods_selection(lm, reward_threshold=threshold, necessity_threshold=1e9),
                mods_selection(lm, name="mods_cut", reward_threshold=threshold, budget=3, seed_count=10),
            ],
        ),
    )

    ids, vectors = zip(*query(tmp_path, "SELECT sample_id, embedding FROM embed ORDER BY sample_id"))
    x = np.array(vectors, dtype=np.float32)
    texts = dict(query(tmp_path, "SELECT sample_id, instruction FROM samples"))
    outputs = dict(query(tmp_path, "SELECT sample_id, output FROM samples"))
    rewards = dict(zip(ids, direct_reward(reward, [(texts[s], outputs[s]) for s in ids])))
    assert dict(query(tmp_path, "SELECT sample_id, reward FROM rm")) == pytest.approx(rewards, abs=1e-5)
    quality = [i for i, sid in enumerate(ids) if rewards[sid] > threshold]
    assert 0 < len(quality) < len(ids)

    # seeds cut to the budget keep k-center order; no room is left, so nothing is generated
    cut = [ids[quality[j]] for j in brute_kcenter(x[quality], 3, seed=0)]
    assert members(tmp_path, "mods_cut") == [(sid, "seed") for sid in cut]
    assert query(tmp_path, "SELECT count(*) FROM mods_generations WHERE selection = 'mods_cut'") == [(0,)]

    # (2) seeds; pass A: the augmentation is k-center over every non-seed high-quality sample
    seeds = [quality[j] for j in brute_kcenter(x[quality], 4, seed=0)]
    candidates = sorted(set(quality) - set(seeds))
    augmentation = [candidates[j] for j in brute_kcenter(x[candidates], 4, seed=0)]
    assert members(tmp_path, "mods") == [(ids[i], "seed") for i in seeds] + [
        (ids[i], "necessity") for i in augmentation
    ]
    generated = dict(
        query(tmp_path, "SELECT sample_id, generated_reward FROM mods_generations WHERE selection = 'mods'")
    )
    assert sorted(generated) == [ids[i] for i in candidates]

    # pass B: half of the generations fall below the necessity threshold
    # midway between the two middle rewards: no generation's reward sits on the threshold (where the
    # batched and the one-at-a-time reward could round to different sides)
    middle = sorted(generated.values())
    necessity = (middle[len(middle) // 2 - 1] + middle[len(middle) // 2]) / 2
    run_document(
        tmp_path,
        document(sentence, reward, [mods_selection(lm, reward_threshold=threshold, necessity_threshold=necessity)]),
    )
    (config_hash,) = query(
        tmp_path, "SELECT config_hash FROM stage_runs WHERE stage = 'mods' ORDER BY finished_at DESC LIMIT 1"
    )[0]
    rows = query(
        tmp_path,
        "SELECT sample_id, question, generated, generated_reward, necessary, failure, config_hash "
        "FROM mods_generations WHERE selection = 'mods' ORDER BY sample_id",
    )
    assert [r[0] for r in rows] == [ids[i] for i in candidates]
    assert {r[6] for r in rows} == {config_hash} and {r[5] for r in rows} == {None}

    # (3) generations: the saved adapter, one prompt at a time, no padding; rewards: the model directly
    tokenizer = AutoTokenizer.from_pretrained(lm)
    adapter = tmp_path / "m.artifacts" / "mods" / config_hash / "epoch-1"
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lm), adapter).eval()
    hand_texts = []
    for sid, question, _, _, _, _, _ in rows:
        assert question == texts[sid]
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        with torch.inference_mode():
            out = tuned.generate(
                input_ids=torch.tensor([prompt]),
                max_new_tokens=6,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        hand_texts.append(tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True).strip())
    assert [r[2] for r in rows] == hand_texts
    hand_rewards = direct_reward(reward, [(r[1], text) for r, text in zip(rows, hand_texts)])
    assert [r[3] for r in rows] == pytest.approx(hand_rewards, abs=1e-5)
    necessary = [ids.index(r[0]) for r, value in zip(rows, hand_rewards) if value < necessity]
    assert [r[4] for r in rows] == [value < necessity for value in hand_rewards]
    assert 0 < len(necessary) < len(candidates)

    # (4) final = seeds ∪ k-center over the necessary set; reasons and values stored
    augmentation = [necessary[j] for j in brute_kcenter(x[necessary], min(4, len(necessary)), seed=0)]
    assert members(tmp_path, "mods") == [(ids[i], "seed") for i in seeds] + [
        (ids[i], "necessity") for i in augmentation
    ]
    values = dict(
        query(
            tmp_path, "SELECT sample_id, value FROM selection_details WHERE selection = 'mods' AND role = 'necessity'"
        )
    )
    assert values == pytest.approx({ids[i]: hand_rewards[candidates.index(i)] for i in augmentation}, abs=1e-5)
    scores = dict(query(tmp_path, "SELECT sample_id, score FROM selections WHERE selection = 'mods'"))
    assert scores == pytest.approx({ids[i]: rewards[ids[i]] for i in seeds + augmentation}, abs=1e-5)


def test_mods_names_an_empty_quality_set(tmp_path, models):
    lm, reward, sentence = models
    write_jsonl(tmp_path / "pool.jsonl", records(6))
    with pytest.raises(Exception) as raised:
        run_document(tmp_path, document(sentence, reward, [mods_selection(lm, reward_threshold=1e9)]))
    message = str(raised.value)
    assert "mods" in message and "`reward_threshold` 1000000000.0" in message and "'rm'" in message


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"reward": "embed"}, "'embed' is not a reward_scores stage"),
        ({"reward": "nowhere"}, "no stage or selection named 'nowhere'"),
        ({"seed_count": 5, "seed_fraction": 0.5}, "at most one of `seed_count`"),
        ({"max_new_tokens": 64}, "`max_new_tokens` (64) must be below `max_length` (64)"),
        ({"seed_fraction": 0}, "seed_fraction"),
    ],
)
def test_mods_yaml_errors(tmp_path, models, keys, message):
    lm, reward, sentence = models
    write_jsonl(tmp_path / "pool.jsonl", records(6))
    with pytest.raises(Exception) as raised:
        run_document(tmp_path, document(sentence, reward, [mods_selection(lm, **keys)]))
    assert message in str(raised.value)
