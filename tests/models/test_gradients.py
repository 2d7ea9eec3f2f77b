import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation_assets.models.chat_format import collate, encode_conversation
from curation_assets.models.gradients import LoraGradientCapture, per_sample_grad_norms, per_sample_response_losses
from curation_assets.models.lora import LoraSettings, attach_lora, lora_finetune
from tests.support.models import build_tiny_causal_lm


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("lm"))


def encoded_samples(tokenizer, n=6):
    words = "the a of to is and in it you that for on with as are this".split()
    convs = [
        [
            {"role": "user", "content": " ".join(words[i : i + 3 + i])},
            {"role": "assistant", "content": " ".join(words[2 * i % 7 : 2 * i % 7 + 1 + i])},
        ]
        for i in range(n)
    ]
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
    lora_finetune(
        model,
        samples,
        LoraSettings(r=4, dropout=0.0, max_steps=3, batch_size=2, lr=1e-2),
        pad_token_id=tokenizer.pad_token_id,
        seed=0,
    )
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
    result = lora_finetune(
        model, samples, settings, pad_token_id=tokenizer.pad_token_id, seed=0, checkpoint_dir=tmp_path
    )
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


def test_batched_preconditioned_projected_features_equal_a_backward_per_sample_loop(folder, tmp_path):
    from curation_assets.methods.less import adam_precondition
    from curation_assets.methods.projection import DenseRademacherProjector
    from curation_assets.models.gradients import lora_optimizer_moments, per_sample_gradient_features

    tokenizer = AutoTokenizer.from_pretrained(folder)
    samples = encoded_samples(tokenizer)
    model = lora_model(folder)
    result = lora_finetune(
        model,
        samples,
        LoraSettings(r=4, dropout=0.0, max_steps=3, batch_size=2, lr=1e-2),
        pad_token_id=tokenizer.pad_token_id,
        seed=0,
        checkpoint_dir=tmp_path,
    )
    model.eval()
    state = torch.load(result.checkpoints[-1].folder / "optimizer.pt")  # as saved with the checkpoint
    moments = lora_optimizer_moments(model, state)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(moments) == len(named)
    n_params = sum(p.numel() for _, p in named)
    projector = DenseRademacherProjector(n_params, 256, seed=0, block_rows=500)
    batch = collate(samples, tokenizer.pad_token_id)
    batched = per_sample_gradient_features(model, batch, projector, moments)
    plain = per_sample_gradient_features(model, batch, projector)
    for i, sample in enumerate(samples):  # the LESS loop: one backward per sample, flatten, precondition
        model.zero_grad(set_to_none=True)
        per_sample_response_losses(model, collate([sample], tokenizer.pad_token_id))[0].backward()
        flat, flat_plain = [], []
        for index, (_, p) in enumerate(named):
            m, v = state["state"][index]["exp_avg"], state["state"][index]["exp_avg_sq"]
            flat.append(adam_precondition(p.grad.unsqueeze(0), m, v)[0].reshape(-1))
            flat_plain.append(p.grad.reshape(-1))
        expected = projector.project(torch.cat(flat).unsqueeze(0))[0]
        expected_plain = projector.project(torch.cat(flat_plain).unsqueeze(0))[0]
        assert torch.linalg.vector_norm(batched[i] - expected) <= 1e-4 * torch.linalg.vector_norm(expected)
        assert torch.linalg.vector_norm(plain[i] - expected_plain) <= 1e-4 * torch.linalg.vector_norm(expected_plain)
