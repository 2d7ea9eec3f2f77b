"""LESS gradient features with the packaged SmolLM2-135M + LoRA on q/k/v/o, ShareGPT samples:
ours (one batched backward per batch, per-layer Adam preconditioning, Kronecker projection)
vs the LESS-style loop (a backward pass per sample, flatten the LoRA gradient, precondition,
seeded dense Rademacher projection, regenerated per group of 16 samples as TRAK's projector does) in the same run. Also
the overlap of the two top-k LESS selections against a few GSM8K target samples."""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.common import BenchResult, peak_memory, progress, to_numpy
from bench.lm_bench import sharegpt_conversations
from curation_assets.methods.less import adam_precondition, less_scores
from curation_assets.methods.projection import DenseRademacherProjector, HadamardProjector, KroneckerProjector
from curation_assets.models.causal_lm import PACKAGED_SMOLLM2, fresh_causal_lm
from curation_assets.models.chat_format import collate, encode_conversation, longest_first
from curation_assets.models.device import compute_device
from curation_assets.models.gradients import (
    LoraGradientCapture,
    per_sample_gradient_features,
    per_sample_response_losses,
)
from curation_assets.models.lora import LoraSettings, attach_lora, lora_finetune
from curation_assets.sources.normalise import normalise_record
from curation_assets.sources.packaged import packaged_file
from curation_assets.sources.records import read_records


def gsm8k_conversations(n: int) -> list[list[dict[str, str]]]:
    out = []
    for record in read_records(packaged_file("gsm8k")):
        value = record.value
        out.append(
            normalise_record(
                {"instruction": value["question"], "input": "", "output": value["answer"]}, "alpaca"
            ).messages
        )
        if len(out) == n:
            break
    return out


def run(quick: bool) -> BenchResult:
    dev = compute_device().name
    n, max_length, rank, dim, top = (16, 128, 8, 2048, 4) if quick else (200, 256, 128, 8192, 10)
    settings = LoraSettings(
        r=rank,
        alpha=4 * rank,
        dropout=0.0,
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        lr=2e-5,
        max_steps=2,
        batch_size=4,
    )
    device = compute_device()
    model, tokenizer = fresh_causal_lm(PACKAGED_SMOLLM2)
    model = attach_lora(model, settings, seed=0)
    pad = tokenizer.pad_token_id
    train = [encode_conversation(tokenizer, c, max_length) for c in sharegpt_conversations(n)]
    targets = [encode_conversation(tokenizer, c, max_length) for c in gsm8k_conversations(4)]
    result_ft = lora_finetune(model, train[:8], settings, pad_token_id=pad, seed=0, device=dev)  # Adam moments
    model.eval()
    optimizer = result_ft.optimizer
    capture = LoraGradientCapture(model)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    moments = {
        name[: -len(".weight")]: (optimizer.state[p]["exp_avg"], optimizer.state[p]["exp_avg_sq"])
        for name, p in zip(names, params)
    }
    n_params = sum(p.numel() for p in params)
    result = BenchResult(
        f"LESS gradient features, {n} ShareGPT samples <= {max_length} tokens, SmolLM2-135M + "
        f"LoRA r{rank} q/k/v/o ({n_params / 1e6:.1f}M parameters), {dim} dims, {device.name} {device.dtype_name}"
    )

    progress("less: ours (kronecker)")
    kron = KroneckerProjector([tuple(m.weight.shape) for m in capture.layers.values()], dim, seed=0)
    order = longest_first(train)
    ours = np.zeros((n, kron.dim), dtype=np.float32)
    start = time.perf_counter()
    for i in range(0, n, 8):
        idx = order[i : i + 8]
        ours[idx] = to_numpy(
            per_sample_gradient_features(
                model, collate([train[j] for j in idx], pad, dev), kron, moments, capture=capture
            )
        )
    ours_s = time.perf_counter() - start
    target_batch = collate(targets, pad, dev)  # one batched call per projector (dense regenerates its matrix per call)
    ours_val = to_numpy(per_sample_gradient_features(model, target_batch, kron, None, capture=capture))
    progress("less: ours (hadamard)")
    srht = HadamardProjector(n_params, dim, seed=0)
    hadamard = np.zeros((n, dim), dtype=np.float32)
    start = time.perf_counter()
    for i in range(0, n, 8):
        idx = order[i : i + 8]
        hadamard[idx] = to_numpy(
            per_sample_gradient_features(
                model, collate([train[j] for j in idx], pad, dev), srht, moments, capture=capture
            )
        )
    hadamard_s = time.perf_counter() - start
    hadamard_val = to_numpy(per_sample_gradient_features(model, target_batch, srht, None, capture=capture))

    # on a GPU the loop draws its matrix there, as TRAK's CUDA projector does
    progress("less: the LESS-style loop")
    dense = DenseRademacherProjector(n_params, dim, seed=0, block_rows=65_536, device_rng=device.name == "cuda")
    val_flat = []
    for t in targets:  # plain gradients of the target samples (not timed)
        model.zero_grad(set_to_none=True)
        per_sample_response_losses(model, collate([t], pad, dev))[0].backward()
        val_flat.append(torch.cat([p.grad.reshape(-1) for p in params]))
    val_matrix = torch.stack(val_flat).float()
    loop_val_np = to_numpy(dense.project(val_matrix))
    exact_dots = np.zeros((n, len(targets)))
    exact_norms = np.zeros(n)
    loop = np.zeros((n, dim), dtype=np.float32)
    group = 16  # the loop projects groups of samples, regenerating the dense matrix per group as TRAK does
    loop_s = 0.0
    for g0 in range(0, n, group):
        start = time.perf_counter()
        flat = torch.zeros(min(group, n - g0), n_params, device=device.name)
        for i, sample in enumerate(train[g0 : g0 + group]):  # the LESS loop: one backward per sample
            model.zero_grad(set_to_none=True)
            per_sample_response_losses(model, collate([sample], pad, dev))[0].backward()
            parts = []
            for p in params:
                state = optimizer.state[p]
                parts.append(
                    adam_precondition(p.grad.unsqueeze(0), state["exp_avg"], state["exp_avg_sq"])[0].reshape(-1)
                )
            flat[i] = torch.cat(parts)
        loop[g0 : g0 + len(flat)] = to_numpy(dense.project(flat))
        loop_s += time.perf_counter() - start
        exact_dots[g0 : g0 + len(flat)] = to_numpy(flat @ val_matrix.T)  # exact, for the accuracy check only
        exact_norms[g0 : g0 + len(flat)] = to_numpy(flat.norm(dim=1))

    # ours with the loop's own dense matrix (projection=dense, the exact LESS reproduction): batched
    # per-sample gradients, projected per group of `group` samples like the loop
    progress("less: ours (dense)")
    ours_dense = np.zeros((n, dim), dtype=np.float32)
    start = time.perf_counter()
    for g0 in range(0, n, group):
        idx = order[g0 : g0 + group]
        ours_dense[idx] = to_numpy(
            per_sample_gradient_features(
                model, collate([train[j] for j in idx], pad, dev), dense, moments, capture=capture
            )
        )
    dense_s = time.perf_counter() - start
    ours_dense_val = to_numpy(per_sample_gradient_features(model, target_batch, dense, None, capture=capture))
    dense_error = float(np.max(np.linalg.norm(ours_dense - loop, axis=1) / np.linalg.norm(loop, axis=1)))
    dense_scores, _ = less_scores([ours_dense], [ours_dense_val], [1.0])

    ours_scores, _ = less_scores([ours], [ours_val], [1.0])
    loop_scores, _ = less_scores([loop], [loop_val_np], [1.0])
    hadamard_scores, _ = less_scores([hadamard], [hadamard_val], [1.0])
    exact_scores = (exact_dots / (exact_norms[:, None] * to_numpy(val_matrix.norm(dim=1))[None, :])).mean(axis=1)

    def overlap_with(scores: np.ndarray, reference: np.ndarray) -> float:
        return len(set(np.argsort(-scores)[:top]) & set(np.argsort(-reference)[:top])) / top

    overlap = overlap_with(ours_scores, loop_scores)
    dense_overlap = overlap_with(dense_scores, loop_scores)
    result.add(
        "samples/s, ours with projection=kronecker vs LESS-style loop",
        n / loop_s,
        n / ours_s,
        "samples/s",
        ">= 5x",
        loop_s / ours_s >= 5,
        higher_is_better=True,
    )
    result.add(
        "samples/s, ours with projection=dense (the loop's matrix) vs LESS-style loop",
        n / loop_s,
        n / dense_s,
        "samples/s",
        "(context)",
        None,
        higher_is_better=True,
    )
    result.add(
        f"top-{top} LESS selection overlap, projection=dense with the loop's",
        1.0,
        dense_overlap,
        "fraction",
        ">= 0.9",
        dense_overlap >= 0.9,
        higher_is_better=True,
    )
    result.add(
        f"top-{top} LESS selection overlap, kronecker with the loop's",
        1.0,
        overlap,
        "fraction",
        ">= 0.9",
        overlap >= 0.9,
        higher_is_better=True,
    )
    result.add(
        f"top-{top} LESS selection overlap, hadamard with the loop's",
        1.0,
        overlap_with(hadamard_scores, loop_scores),
        "fraction",
        ">= 0.9",
        overlap_with(hadamard_scores, loop_scores) >= 0.9,
        higher_is_better=True,
    )
    result.add(
        "samples/s, ours with projection=hadamard vs LESS-style loop",
        n / loop_s,
        n / hadamard_s,
        "samples/s",
        ">= 5x",
        loop_s / hadamard_s >= 5,
        higher_is_better=True,
    )
    result.add(
        f"top-{top} overlap with the exact selection: hadamard vs the loop's",
        overlap_with(loop_scores, exact_scores),
        overlap_with(hadamard_scores, exact_scores),
        "fraction",
        "hadamard >= loop's",
        overlap_with(hadamard_scores, exact_scores) >= overlap_with(loop_scores, exact_scores),
        higher_is_better=True,
    )
    result.add(
        f"top-{top} overlap with the exact (unprojected) selection: kronecker vs the loop's",
        overlap_with(loop_scores, exact_scores),
        overlap_with(ours_scores, exact_scores),
        "fraction",
        "ours >= loop's",
        overlap_with(ours_scores, exact_scores) >= overlap_with(loop_scores, exact_scores),
        higher_is_better=True,
    )
    result.notes.append(
        f"projection=dense: max relative difference of a sample's features from the loop's "
        f"{dense_error:.2e} (same matrix; batched vs one backward per sample)"
    )
    result.notes.append(
        "kronecker/hadamard use other random matrices than the loop, so their top-k can only agree "
        "with the loop's as far as both agree with the exact selection: the projection noise "
        f"(~1/sqrt({dim}) = {dim**-0.5:.3f} per cosine) is the size of the spread of the exact "
        "cosines below"
    )
    corr = {
        name: float(np.corrcoef(scores, exact_scores)[0, 1])
        for name, scores in (("ours", ours_scores), ("loop", loop_scores), ("hadamard", hadamard_scores))
    }
    result.notes.append(
        f"ours {ours_s:.1f} s, loop {loop_s:.1f} s (its dense projection of {n_params / 1e6:.1f}M "
        f"parameters to {dim} dims is regenerated per group of {group} samples); {peak_memory()}"
    )
    result.notes.append(
        f"Pearson r of the projected scores with the exact scores: kronecker {corr['ours']:.3f}, "
        f"hadamard {corr['hadamard']:.3f}, loop (dense) {corr['loop']:.3f}; exact cosines range {exact_scores.min():.4f} .. "
        f"{exact_scores.max():.4f}"
    )
    return result
