"""The weight warm-up of Influence Distillation's `params`: only the selected weights move, the
moments are torch AdamW's own, and the saved file puts the same weights back."""

import pytest
import torch

from curation_assets.models.chat_format import encode_conversation
from curation_assets.models.influence_gradients import WeightGradientCapture, layer_projector, projected_directions
from curation_assets.models.lora import LoraSettings
from curation_assets.models.weight_warmup import (
    linear_layers,
    load_weight_warmup,
    save_weight_warmup,
    warm_up_weights,
)
from tests.support.models import build_tiny_causal_lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_causal_lm(tmp_path_factory.mktemp("lm"))
    return folder, AutoTokenizer.from_pretrained(folder), lambda: AutoModelForCausalLM.from_pretrained(folder)


def conversations(n):
    words = "the a of to is and in it you that for on".split()
    return [
        [
            {"role": "user", "content": f"q{i} {words[i % 12]}"},
            {"role": "assistant", "content": " ".join(words[i % 5 : i % 5 + 1 + i % 4])},
        ]
        for i in range(n)
    ]


def test_only_the_selected_weights_train_and_the_saved_file_restores_them(tmp_path, tiny):
    _, tokenizer, fresh = tiny
    model, before = fresh(), fresh()
    layers = linear_layers(model, ["down_proj"])
    assert list(layers) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    samples = [encode_conversation(tokenizer, c, 64) for c in conversations(6)]
    settings = LoraSettings(lr=1e-2, epochs=3, batch_size=2, warmup_ratio=0.0)
    adam, info = warm_up_weights(
        model, layers, samples, settings, epochs=2, pad_token_id=tokenizer.pad_token_id, seed=0
    )
    assert adam.step == info["warmup_steps"] == 6  # 2 of 3 planned epochs, 3 steps each
    reference = dict(before.named_parameters())
    for name, parameter in model.named_parameters():
        moved = not torch.equal(parameter, reference[name])
        assert moved == (".down_proj." in name), name
    assert adam.betas == (0.9, 0.999) and adam.eps == 1e-8
    assert all(v.shape == layers[name].weight.shape and (v > 0).any() for name, (_, v) in adam.moments.items())

    path = tmp_path / "warm.pt"
    save_weight_warmup(path, layers, adam)
    restored = fresh()
    loaded = load_weight_warmup(path, linear_layers(restored, ["down_proj"]))
    assert loaded.step == adam.step
    for name in layers:
        torch.testing.assert_close(restored.get_submodule(name).weight, layers[name].weight)
        torch.testing.assert_close(loaded.moments[name][1], adam.moments[name][1])
    with pytest.raises(ValueError, match="delete it"):
        load_weight_warmup(path, linear_layers(fresh(), ["o_proj"]))


def test_unknown_params_name_the_fix(tiny):
    with pytest.raises(ValueError, match="set `params`"):
        linear_layers(tiny[2](), ["mlp.fc_out"])


def test_batched_normalised_directions_equal_one_backward_per_sample(tiny):
    _, tokenizer, fresh = tiny
    from curation_assets.models.chat_format import collate

    model = fresh().eval()
    capture = WeightGradientCapture(model, ["down_proj", "o_proj"])
    shapes = [tuple(m.weight.shape) for m in capture.layers.values()]
    n_params = sum(a * b for a, b in shapes)
    projector = layer_projector(shapes, "hadamard", 1 << 20, seed=0)
    assert projector.dim == n_params  # at most the gradient's length
    scale = {
        name: torch.rand(m.weight.shape, generator=torch.Generator().manual_seed(1)) + 0.5
        for name, m in capture.layers.items()
    }
    samples = [encode_conversation(tokenizer, c, 64) for c in conversations(5)]
    batched = projected_directions(
        model,
        collate(samples, tokenizer.pad_token_id),
        capture,
        projector,
        lambda name, g: g * scale[name],
        normalize=True,
    )
    params = [m.weight for m in capture.layers.values()]
    for row, sample in enumerate(samples):
        batch = collate([sample], tokenizer.pad_token_id)
        grads = torch.autograd.grad(model(input_ids=batch["input_ids"], labels=batch["labels"]).loss, params)
        flat = torch.cat([(g * s).reshape(-1) for g, s in zip(grads, scale.values())])
        expected = projector.project((flat / flat.norm()).unsqueeze(0))[0]
        torch.testing.assert_close(batched[row], expected, rtol=1e-3, atol=1e-5)
