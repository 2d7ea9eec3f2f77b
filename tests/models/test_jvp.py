"""JVP embeddings: batched forward-mode tangents equal central finite differences of an
untouched model's block output, one sample at a time."""

import numpy as np
import pytest
import torch

from curation_assets.methods.projection import DenseRademacherProjector
from curation_assets.models.chat_format import collate, encode_conversation
from curation_assets.models.jvp import JvpEmbedder
from tests.support.models import build_tiny_causal_lm


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("lm"))


def conversations(n=5):
    words = "the a of to is and in it you that for on with as are this".split()
    return [
        [
            {"role": "user", "content": " ".join(words[i : i + 2 + i])},
            {"role": "assistant", "content": " ".join(words[2 * i : 2 * i + 3])},
        ]
        for i in range(n)
    ]


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(folder)


def test_batched_jvp_equals_finite_differences_per_sample(folder):
    model, tokenizer = load(folder)
    embedder = JvpEmbedder(model, num_blocks=1, num_tangents=2, dim=4096, seed=3)
    assert embedder.dim == embedder.raw_dim == 2 * 32  # shorter than dim: no projection
    encoded = [encode_conversation(tokenizer, c, 64) for c in conversations()]
    assert len({len(e.input_ids) for e in encoded}) > 1  # the batch is padded
    batch = collate(encoded, tokenizer.pad_token_id)
    got = embedder.embed({k: batch[k] for k in ("input_ids", "attention_mask")}).numpy()

    reference, _ = load(folder)  # all blocks, final norm: block 0's output is hidden_states[1]
    params = dict(reference.named_parameters())
    eps = 1e-3
    for row, sample in enumerate(encoded):
        ids = torch.tensor([sample.input_ids])
        expected = []
        for index in range(2):
            tangent = embedder.tangent(index)
            outputs = []
            for sign in (1, -1):
                with torch.no_grad():
                    for name, direction in tangent.items():
                        params[f"model.{name}"].add_(sign * eps * direction)
                    hidden = reference(input_ids=ids, output_hidden_states=True).hidden_states[1][0, -1]
                    for name, direction in tangent.items():
                        params[f"model.{name}"].sub_(sign * eps * direction)
                outputs.append(hidden.double())
            expected.append(((outputs[0] - outputs[1]) / (2 * eps)).numpy())
        np.testing.assert_allclose(got[row], np.concatenate(expected), rtol=2e-2, atol=2e-3)


def test_tangents_are_seeded_gaussians_and_long_embeddings_are_projected(folder):
    model, tokenizer = load(folder)
    small = JvpEmbedder(model, num_blocks=2, num_tangents=3, dim=16, seed=5)
    assert small.raw_dim == 96 and small.dim == 16
    values = torch.cat([t.reshape(-1) for t in small.tangent(0).values()])
    assert abs(float(values.mean())) < 0.05 and float(values.std()) == pytest.approx(1.0, abs=0.05)
    again = JvpEmbedder(load(folder)[0], num_blocks=2, num_tangents=3, dim=16, seed=5)
    for name, tensor in small.tangent(1).items():
        assert torch.equal(tensor, again.tangent(1)[name])
    batch = collate([encode_conversation(tokenizer, c, 64) for c in conversations(3)], tokenizer.pad_token_id)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    unprojected = JvpEmbedder(load(folder)[0], num_blocks=2, num_tangents=3, dim=4096, seed=5).embed(inputs)
    expected = DenseRademacherProjector(96, 16, seed=5).project(unprojected)
    torch.testing.assert_close(small.embed(inputs), expected, rtol=1e-4, atol=1e-5)


def test_too_many_blocks_is_a_clear_error(folder):
    with pytest.raises(ValueError, match="num_blocks 5 exceeds the model's 2"):
        JvpEmbedder(load(folder)[0], num_blocks=5, num_tangents=1, dim=8, seed=0)
