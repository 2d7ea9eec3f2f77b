"""The LESS warm-up's optimiser schedule: micro-batch 1 x 32 accumulation steps (effective batch
32), ⌈n/32⌉ optimiser steps per epoch, transformers' linear schedule with ⌈3%⌉ warm-up steps,
gradient = mean of the 32 per-sample gradients clipped at norm 1.0; checked against plain
computations written here."""

import math
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation_assets.models.chat_format import collate, encode_conversation
from curation_assets.models.lora import attach_lora, lora_finetune
from curation_assets.stages.influence.lora_warmup import LESS_LORA, LoraWarmupSpec
from tests.support.models import build_tiny_causal_lm

N_SAMPLES, EPOCHS = 40, 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("lm"))


def conversations(n):
    words = "the a of to is and in it you that for on with as are this".split()
    return [
        [
            {"role": "user", "content": " ".join(words[i % 9 : i % 9 + 2 + i % 4])},
            {"role": "assistant", "content": " ".join(words[i % 5 : i % 5 + 1 + i % 3])},
        ]
        for i in range(n)
    ]


def test_less_defaults_are_the_released_scripts():
    assert (LESS_LORA.batch_size, LESS_LORA.grad_accumulation, LESS_LORA.max_grad_norm) == (1, 32, 1.0)
    spec = LoraWarmupSpec(name="w", kind="lora_warmup")
    assert spec.max_length == 2048 and spec.turns == "all" and spec.lora == LESS_LORA


def test_warmup_takes_ceil_n_over_32_steps_per_epoch_on_the_mean_clipped_gradient(folder, tmp_path, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    samples = [encode_conversation(tokenizer, c, 64) for c in conversations(N_SAMPLES)]
    # the released recipe at a size the tiny model has (no dropout, so the gradient is deterministic)
    settings = LESS_LORA.model_copy(update={"r": 4, "alpha": 16, "dropout": 0.0, "epochs": EPOCHS, "lr": 1e-3})
    model = attach_lora(AutoModelForCausalLM.from_pretrained(folder), settings, 0)
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    forwards = []
    model.register_forward_hook(lambda module, args, output: forwards.append(1))
    steps = []  # (learning rate, micro-batches since the previous step, the gradient) at every optimiser step
    original_step = torch.optim.AdamW.step

    def recording_step(optimizer, *args, **kwargs):
        grads = {id(p): p.grad.detach().clone() for group in optimizer.param_groups for p in group["params"]}
        steps.append((optimizer.param_groups[0]["lr"], len(forwards), grads))
        forwards.clear()
        return original_step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    result = lora_finetune(
        model, samples, settings, pad_token_id=tokenizer.pad_token_id, seed=0, checkpoint_dir=tmp_path
    )

    per_epoch = math.ceil(N_SAMPLES / 32)
    assert len(steps) == EPOCHS * per_epoch == len(result.step_losses) == 4
    assert [s[1] for s in steps] == [32, 8, 32, 8]  # micro-batches of one sample; the partial group steps too

    # transformers' get_linear_schedule_with_warmup with ceil(0.03 * total) warm-up steps
    total = EPOCHS * per_epoch
    warm = math.ceil(0.03 * total)
    want = [1e-3 * (s / warm if s < warm else (total - s) / (total - warm)) for s in range(total)]
    assert [s[0] for s in steps] == pytest.approx(want)
    assert [c.mean_lr for c in result.checkpoints] == pytest.approx([sum(want[:2]) / 2, sum(want[2:]) / 2])

    # step 1's gradient: the mean over the first 32 samples of the shuffled order of each sample's own
    # loss gradient, clipped to global norm 1.0 (the weights are the initial ones: its learning rate is 0)
    order = list(range(N_SAMPLES))
    random.Random(0).shuffle(order)
    check = attach_lora(AutoModelForCausalLM.from_pretrained(folder), settings, 0)
    named = {n: p for n, p in check.named_parameters() if p.requires_grad}
    for n, p in named.items():
        assert torch.equal(p.detach(), initial[n])
    total_grad = {n: torch.zeros_like(p) for n, p in named.items()}
    for i in order[:32]:
        check.zero_grad(set_to_none=True)
        check(**collate([samples[i]], tokenizer.pad_token_id)).loss.backward()
        for n, p in named.items():
            total_grad[n] += p.grad / 32
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in total_grad.values()))
    scale = min(1.0, 1.0 / (norm + 1e-6))
    assert norm > 0
    trained = [p for p in model.parameters() if p.requires_grad]
    recorded = steps[0][2]
    for (n, _), p in zip(named.items(), trained):
        torch.testing.assert_close(recorded[id(p)], total_grad[n] * scale, rtol=1e-4, atol=1e-7)
