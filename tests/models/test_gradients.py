import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation_assets.models.chat_format import collate, encode_conversation
from curation_assets.models.gradients import LoraGradientCapture, per_sample_grad_norms, per_sample_response_losses
from curation_assets.models.lora import LoraSettings, attach_lora, lora_finetune
from tests.models_fixtures import build_tiny_causal_lm


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("lm"))


def encoded_samples(tokenizer, n=6):
    words = "the a of to is and in it you that for on with as are this".split()
    convs = [[{"role": "user", "content": " ".join(words[i:i + 3 + i])},
              {"role": "assistant", "content": " ".join(words[2 * i % 7:2 * i % 7 + 1 + i])}] for i in range(n)]
    return [encode_conversation(tokenizer, c, 64) for c in convs]


def lora_model(folder, seed=0):
    model = AutoModelForCausalLM.from_pretrained(folder)
    peft_model = attach_lora(model, LoraSettings(r=4, dropout=0.0, target_modules=("q_proj", "v_proj")), seed)
    # LoRA B starts at zero; take a few steps so both A and B carry gradient
    return peft_model


def test_batched_per_sample_grad_norms_equal_a_backward_per_sample_loop(folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    samples = encoded_samples(tokenizer)
    model = lora_model(folder)
    lora_finetune(model, samples, LoraSettings(r=4, dropout=0.0, max_steps=3, batch_size=2, lr=1e-2),
                  pad_token_id=tokenizer.pad_token_id, seed=0)
    model.eval()
    batch = collate(samples, tokenizer.pad_token_id)
    batched = per_sample_grad_norms(model, batch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for i, sample in enumerate(samples):
        model.zero_grad(set_to_none=True)
        loss = per_sample_response_losses(model, collate([sample], tokenizer.pad_token_id))[0]
        loss.backward()
        reference = torch.sqrt(sum(p.grad.pow(2).sum() for p in trainable))
        assert batched[i].item() == pytest.approx(reference.item(), rel=1e-4)


def test_capture_finds_every_lora_matrix(folder):
    model = lora_model(folder)
    capture = LoraGradientCapture(model)
    assert len(capture.layers) == 2 * 2 * 2  # layers x (q, v) x (A, B)


def test_finetune_lowers_the_training_loss_and_checkpoints(folder, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    samples = encoded_samples(tokenizer, 8)
    model = lora_model(folder)
    settings = LoraSettings(r=8, dropout=0.0, lr=5e-2, epochs=3, batch_size=4, scheduler="constant", warmup_ratio=0)
    result = lora_finetune(model, samples, settings, pad_token_id=tokenizer.pad_token_id, seed=0,
                           checkpoint_dir=tmp_path)
    assert result.step_losses[-1] < result.step_losses[0]
    assert [c.epoch for c in result.checkpoints] == [1, 2, 3]
    assert all((c.folder / "optimizer.pt").exists() and len(c.adapter_sha256) == 64 for c in result.checkpoints)
    assert len({c.adapter_sha256 for c in result.checkpoints}) == 3
    assert result.checkpoints[0].mean_lr == pytest.approx(5e-2)


def test_response_losses_equal_transformers_loss(folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    samples = encoded_samples(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        losses = per_sample_response_losses(model, collate(samples, tokenizer.pad_token_id))
        for i, sample in enumerate(samples):
            reference = model(input_ids=torch.tensor([sample.input_ids]), labels=torch.tensor([sample.labels])).loss
            assert losses[i].item() == pytest.approx(reference.item(), rel=1e-5)
