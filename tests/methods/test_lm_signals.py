import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation_assets.methods.lm_signals import forward_signals, response_token_signals
from curation_assets.models.chat_format import collate, encode_conversation
from tests.support.models import build_tiny_causal_lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = build_tiny_causal_lm(tmp_path_factory.mktemp("lm"))
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def conversations():
    return [
        [{"role": "user", "content": "q1 what is it"}, {"role": "assistant", "content": "yes it is"}],
        [
            {"role": "user", "content": "q2 write code for the list"},
            {"role": "assistant", "content": "one two three four five and code"},
        ],
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": ""}],
    ]


def test_batched_loss_and_el2n_equal_one_sample_at_a_time_references(tiny):
    model, tokenizer = tiny
    encoded = [encode_conversation(tokenizer, c, 128) for c in conversations()]
    batch = collate(encoded, tokenizer.pad_token_id)
    with torch.no_grad():
        signals = forward_signals(model, batch, chunk_tokens=3)  # tiny chunks exercise the chunk loop
        for row, sample in enumerate(encoded):
            ids = torch.tensor([sample.input_ids])
            labels = torch.tensor([sample.labels])
            out = model(input_ids=ids, labels=labels)  # transformers' own shifted, masked mean CE
            if sample.n_response_tokens == 0:
                continue
            assert signals.loss[row].item() == pytest.approx(out.loss.item(), rel=1e-5)
            probs = torch.softmax(out.logits[0, :-1], dim=-1)
            targets = labels[0, 1:]
            keep = targets != -100
            onehot = torch.nn.functional.one_hot(targets[keep], probs.shape[-1]).float()
            el2n = torch.linalg.norm(probs[keep] - onehot, dim=-1).mean()
            assert signals.el2n[row].item() == pytest.approx(el2n.item(), rel=1e-5)
    assert signals.n_tokens.tolist() == [s.n_response_tokens for s in encoded]


def test_no_response_tokens_gives_nan_not_a_default():
    hidden = torch.randn(1, 4, 8)
    labels = torch.full((1, 4), -100)
    signals = response_token_signals(hidden, labels, torch.nn.Linear(8, 11))
    assert math.isnan(signals.loss.item()) and math.isnan(signals.el2n.item()) and signals.n_tokens.item() == 0
