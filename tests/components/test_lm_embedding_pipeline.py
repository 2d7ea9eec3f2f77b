"""Stage `lm_embedding` (DEITA's embedder) through the runner on a tiny random Llama, checked against a
plain per-sample loop: vicuna_v1.1 text built here, one unpadded forward pass with
output_hidden_states, the last layer's state at the last token. The DEITA filter then reads it."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support.files import write_pool
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_document

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def vicuna(messages, eos) -> str:
    """FastChat's vicuna_v1.1 prompt, written out: system + ' ', 'USER: u ', 'ASSISTANT: a</s>', with the
    model's EOS token for '</s>' (Llama's EOS, which DEITA's tokenizers read the literal as)."""
    text = SYSTEM + " "
    for m in messages:
        role = {"user": "USER", "assistant": "ASSISTANT"}[m["role"]]
        if not m["content"]:
            text += role + ":"
        else:
            text += role + ": " + m["content"] + (" " if m["role"] == "user" else eos)
    return text


def document(model, stages, selections=()):
    return pipeline_document("lme", stages=stages, selections=list(selections))


def test_lm_embedding_is_the_last_token_hidden_state_and_feeds_the_deita_filter(tmp_path, tiny_lm):
    write_pool(tmp_path / "pool.jsonl", 21)
    common = {"kind": "lm_embedding", "model": str(tiny_lm)}
    component = run_document(
        tmp_path,
        document(
            tiny_lm,
            [
                {"name": "lme", **common, "max_length": 128, "batch_size": 4},
                {"name": "lme_one", **common, "max_length": 128, "batch_size": 1},
                {"name": "lme_short", **common, "max_length": 24, "batch_size": 3},
                {"name": "lme_chat", **common, "max_length": 128, "render": "chat_template", "normalize": True},
                {"name": "lengths", "kind": "text_stats"},
            ],
            [
                {
                    "name": "deita",
                    "kind": "deita_repr_filter",
                    "embedding": "lme",
                    "stage": "lengths",
                    "column": "output_words",
                    "budget": 8,
                    "tau": 0.99,
                }
            ],
        ),
    )
    with component.store.reader() as con:
        samples = dict(con.execute("SELECT sample_id, messages FROM samples WHERE active").fetchall())
        stored = {
            stage: {
                r[0]: (np.array(r[1]), r[2], r[3])
                for r in con.execute(
                    "SELECT sample_id, embedding, n_tokens, truncated FROM lm_embeddings WHERE stage = $s", {"s": stage}
                ).fetchall()
            }
            for stage in ("lme", "lme_one", "lme_short", "lme_chat")
        }
        lengths = dict(con.execute("SELECT sample_id, output_words FROM text_stats").fetchall())
        members = [
            r[0]
            for r in con.execute("SELECT sample_id FROM selections WHERE selection = 'deita' ORDER BY rank").fetchall()
        ]
        stats = con.execute(
            "SELECT stats->>'render', stats->>'truncated' FROM stage_runs WHERE stage = 'lme_short'"
        ).fetchall()[0]
    assert len(samples) == 22 and all(len(rows) == 22 for rows in stored.values())

    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_lm))

    def last_state(ids):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        return out.hidden_states[-1][0, -1].numpy()

    truncated = 0
    for sid, messages in samples.items():
        ids = tokenizer(vicuna(messages, "<|im_end|>"))["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id or not messages[-1]["content"]
        vector, n_tokens, was_cut = stored["lme"][sid]
        assert n_tokens == len(ids) and not was_cut
        np.testing.assert_allclose(vector, last_state(ids), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stored["lme_one"][sid][0], vector, rtol=1e-4, atol=1e-5)  # batching: no effect
        short, short_tokens, short_cut = stored["lme_short"][sid]
        assert short_tokens == len(ids) and short_cut == (len(ids) > 24)
        truncated += short_cut
        np.testing.assert_allclose(short, last_state(ids[:24]), rtol=1e-4, atol=1e-5)  # the start is kept
        chat_ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)
        expected = last_state(chat_ids["input_ids"])
        np.testing.assert_allclose(
            stored["lme_chat"][sid][0], expected / np.linalg.norm(expected), rtol=1e-4, atol=1e-5
        )
    assert truncated > 0 and stats == ("vicuna_v1.1", str(truncated))

    # the DEITA filter over these vectors: longest answer first, skip within cosine 0.99 of a kept one
    ids = sorted(samples)
    unit = {sid: stored["lme"][sid][0] / np.linalg.norm(stored["lme"][sid][0]) for sid in ids}
    kept = []
    for sid in sorted(ids, key=lambda s: (-lengths[s], s)):
        if len(kept) == 8:
            break
        if all(float(unit[sid] @ unit[k]) <= 0.99 for k in kept):
            kept.append(sid)
    assert members == kept


def test_lm_embedding_is_incremental_and_rejects_a_non_embedding_source(tmp_path, tiny_lm):
    write_pool(tmp_path / "pool.jsonl", 6)
    stages = [{"name": "lme", "kind": "lm_embedding", "model": str(tiny_lm), "max_length": 64}]
    run_document(tmp_path, document(tiny_lm, stages))
    write_pool(tmp_path / "pool.jsonl", 9)  # three more records
    component = run_document(tmp_path, document(tiny_lm, stages))
    with component.store.reader() as con:
        computed = [
            r[0]
            for r in con.execute("SELECT rows_out FROM stage_runs WHERE stage = 'lme' ORDER BY started_at").fetchall()
        ]
        total = con.execute("SELECT count(*) FROM lm_embeddings").fetchall()[0][0]
    assert computed == [7, 3] and total == 10

    bad = document(
        tiny_lm,
        [*stages, {"name": "lengths", "kind": "text_stats"}],
        [{"name": "k", "kind": "kcenter_greedy", "embedding": "lengths", "budget": 2}],
    )
    with pytest.raises(Exception, match="not an embedding stage"):
        run_document(tmp_path, bad)
