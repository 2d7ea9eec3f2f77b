"""Small-LM signals on ShareGPT samples with the packaged SmolLM2-135M: response loss
batched (length-sorted, padded) vs one sample per forward pass, and GraNd per-sample
LoRA-gradient norms from one batched backward vs a backward pass per sample."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.common import BenchResult, to_numpy
from curation_assets.methods.lm_signals import forward_signals
from curation_assets.models.causal_lm import PACKAGED_SMOLLM2, fresh_causal_lm
from curation_assets.models.chat_format import collate, encode_conversation, longest_first
from curation_assets.models.device import compute_device
from curation_assets.models.gradients import per_sample_grad_norms, per_sample_response_losses
from curation_assets.models.lora import LoraSettings, attach_lora
from curation_assets.sources.normalise import RejectRecord, normalise_record
from curation_assets.sources.packaged import packaged_file
from curation_assets.sources.records import read_records


def sharegpt_conversations(n: int) -> list[list[dict[str, str]]]:
    out = []
    for record in read_records(packaged_file("sharegpt")):
        if record.error is None:
            try:
                out.append(normalise_record(record.value, "sharegpt").messages)
            except RejectRecord:
                continue
        if len(out) == n:
            return out
    return out


def counted_flops(forward: Callable[[], object]) -> int:
    """Matrix-multiply FLOPs of one call, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        forward()
    return counter.get_total_flops()


def matmul_peak_flops(device: str, size: int = 2048, repeat: int = 5) -> float:
    """FLOP/s of a large square matmul in the model's dtype: what the hardware can do at best."""
    a = torch.randn(size, size, device=device, dtype=compute_device().torch_dtype)
    a @ a  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        (a @ a).sum().item()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def cpu_has_bf16_matmul() -> bool:
    """oneDNN runs bfloat16 matmuls natively here (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def batched_losses(
    model: torch.nn.Module, encoded: list, pad: int, batch_size: int, device: str
) -> tuple[float, np.ndarray]:
    """(seconds, per-sample response losses) of the length-sorted, padded batched pass."""
    order = longest_first(encoded)
    losses = np.zeros(len(encoded))
    with torch.inference_mode():
        start = time.perf_counter()
        for i in range(0, len(encoded), batch_size):
            idx = order[i : i + batch_size]
            losses[idx] = to_numpy(forward_signals(model, collate([encoded[j] for j in idx], pad, device)).loss)
        return time.perf_counter() - start, losses


def run(quick: bool) -> BenchResult:
    dev = compute_device().name
    n, max_length, batch_size = (40, 256, 8) if quick else (200, 256, 8)
    model, tokenizer = fresh_causal_lm(PACKAGED_SMOLLM2)
    model.eval()
    encoded = [encode_conversation(tokenizer, c, max_length) for c in sharegpt_conversations(n)]
    pad = tokenizer.pad_token_id
    result = BenchResult(f"small-LM signals, {n} ShareGPT samples <= {max_length} tokens, SmolLM2-135M")

    with torch.inference_mode():
        start = time.perf_counter()
        single = [forward_signals(model, collate([e], pad, dev)).loss.item() for e in encoded]
        loop_s = time.perf_counter() - start
        batched_s, batched = batched_losses(model, encoded, pad, batch_size, dev)
        loop_flops = sum(counted_flops(lambda e=e: forward_signals(model, collate([e], pad, dev))) for e in encoded)
    agree = float(np.max(np.abs(batched - np.array(single)) / np.abs(np.array(single))))
    result.add(
        "response loss: samples/s, batched vs one per forward",
        n / loop_s,
        n / batched_s,
        "samples/s",
        ">= 3x",
        (n / batched_s) / (n / loop_s) >= 3,
        higher_is_better=True,
    )
    peak = matmul_peak_flops(dev)
    result.add(
        "response loss, one per forward: achieved matmul FLOP/s vs this machine's measured matmul peak",
        peak / 1e9,
        loop_flops / loop_s / 1e9,
        "GFLOP/s",
        "(context: the most any batching can gain is peak / achieved)",
        None,
        higher_is_better=True,
    )
    result.notes.append(f"loss: max relative difference batched vs single {agree:.2e}")
    if dev == "cpu" and compute_device().dtype_name == "float32" and cpu_has_bf16_matmul():
        half = copy.deepcopy(model).to(torch.bfloat16)
        with torch.inference_mode():  # warm-up: oneDNN builds its bf16 kernels on the first call
            forward_signals(half, collate([encoded[0]], pad))
        bf16_s, bf16_losses = batched_losses(half, encoded, pad, batch_size, dev)
        del half
        bf16_error = float(np.max(np.abs(bf16_losses - batched) / np.abs(batched)))
        result.add(
            "response loss batched: bfloat16 (CURATION_DTYPE=bfloat16) vs float32, this CPU's bf16 matmul",
            n / batched_s,
            n / bf16_s,
            "samples/s",
            "(context: a precision choice, not batching)",
            None,
            higher_is_better=True,
        )
        result.notes.append(
            f"bfloat16 on this CPU: losses within {bf16_error:.1e} relative of float32; "
            f"vs the float32 one-per-forward loop {loop_s / bf16_s:.2f}x"
        )

    peft_model = attach_lora(model, LoraSettings(r=8, dropout=0.0), seed=0)
    peft_model.eval()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    for p in trainable:  # LoRA B starts at zero; give it values so every factor has a gradient
        torch.nn.init.normal_(p, std=0.02)
    m = n // 2
    start = time.perf_counter()
    loop_norms = []
    for e in encoded[:m]:
        peft_model.zero_grad(set_to_none=True)
        per_sample_response_losses(peft_model, collate([e], pad, dev))[0].backward()
        loop_norms.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in trainable)).item())
    grand_loop_s = time.perf_counter() - start
    order = longest_first(encoded[:m])
    fast = np.zeros(m)
    start = time.perf_counter()
    for i in range(0, m, batch_size):
        idx = order[i : i + batch_size]
        fast[idx] = to_numpy(per_sample_grad_norms(peft_model, collate([encoded[j] for j in idx], pad, dev)))
    grand_s = time.perf_counter() - start
    tolerance = 1e-4 if compute_device().dtype_name == "float32" else 2e-2  # bf16 keeps ~3 significant digits
    grand_agree = float(np.max(np.abs(fast - np.array(loop_norms)) / np.array(loop_norms)))
    result.add(
        "GraNd: samples/s, batched per-sample grads vs backward per sample",
        m / grand_loop_s,
        m / grand_s,
        "samples/s",
        f">= 3x and equal to {tolerance:g}",
        (grand_loop_s / grand_s) >= 3 and grand_agree < tolerance,
        higher_is_better=True,
    )
    grand_flops = sum(
        counted_flops(lambda e=e: per_sample_response_losses(peft_model, collate([e], pad, dev))[0].backward())
        for e in encoded[:m]
    )
    result.add(
        "GraNd, backward per sample: achieved matmul FLOP/s vs the measured matmul peak",
        peak / 1e9,
        grand_flops / grand_loop_s / 1e9,
        "GFLOP/s",
        "(context)",
        None,
        higher_is_better=True,
    )
    result.notes.append(
        f"useful matmul FLOP/s (padding not counted): loss one per forward {loop_flops / loop_s / 1e9:.0f}, "
        f"batched {loop_flops / batched_s / 1e9:.0f}; GraNd loop {grand_flops / grand_loop_s / 1e9:.0f}, "
        f"batched {grand_flops / grand_s / 1e9:.0f}; a {2048}x{2048} matmul {peak / 1e9:.0f}. The rest "
        "of the time is work batching does not shrink (attention, norms, activations, the "
        "vocabulary log-softmax, padding); a GPU, where one sample leaves the device idle, is "
        "where batching pays"
    )
    result.notes.append(f"GraNd: max relative difference {grand_agree:.2e} over {m} samples (LoRA r=8 on q,v)")
    return result
