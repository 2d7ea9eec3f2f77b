"""Shared by stages `el2n` and `grand` (Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data
Diet"): score every sample early in training, averaged over independent runs.

Each run r attaches fresh LoRA adapters (seed + r) to the base model, takes
`train_steps` optimiser steps on a random draw of active samples, then scores the
pending samples: EL2N = mean response-token ||softmax - onehot||_2; GraNd = the norm of
the sample's loss gradient w.r.t. the LoRA parameters, from one batched backward pass
per batch. The paper averages over ~10 runs (`runs`, default 10).
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation_assets.models.chat_format import collate, encode_conversation, longest_first
from curation_assets.models.device import compute_device
from curation_assets.models.lora import LoraSettings
from curation_assets.stages.core.causal_lm import (
    CHUNK_SAMPLES,
    CausalLMInput,
    finetune_fresh_lora,
    run_batches_with_oom_backoff,
)
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.registry import StageKind


class EarlyTrainingSpec(CausalLMInput):
    runs: int = Field(10, gt=0, description="Independent runs averaged (paper: ~10).")
    train_steps: int = Field(10, gt=0, description="LoRA optimiser steps before scoring.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA and optimiser settings.")
    seed: int = Field(0, description="Run r uses seed + r for adapters and training order.")


def early_training_schema(signal: str) -> pa.Schema:
    """Rows of the el2n / grand stages: the mean over runs, its standard deviation and the run count."""
    return pa.schema(
        [("sample_id", pa.string()), (signal, pa.float64()), (f"{signal}_std", pa.float64()), ("runs", pa.int32())]
    )


def early_training_kind(
    signal: str, spec: type[EarlyTrainingSpec], *, version: str, summary: str
) -> StageKind[EarlyTrainingSpec]:
    """The kind `signal` (el2n / grand): its rows, `<signal>_scores`, are `early_training_schema(signal)`."""

    def run(spec: EarlyTrainingSpec, ctx: StageContext) -> StageOutput:
        return score_early_training(spec, ctx, f"{signal}_scores", signal)

    return StageKind(
        kind=signal,
        role="stage",
        spec=spec,
        run=run,
        version=version,
        summary=summary,
        table=f"{signal}_scores",
        schema_file="schema/stages/early_training.sql",
        rows_schema=early_training_schema(signal),
        column_lineage={signal: ("messages",), f"{signal}_std": ("messages",), "runs": ()},
        tags=("python", "torch", "peft"),
    )


def score_early_training(spec: EarlyTrainingSpec, ctx: StageContext, table: str, signal: str) -> StageOutput:
    import torch

    from curation_assets.methods.lm_signals import forward_signals
    from curation_assets.models.gradients import LoraGradientCapture, per_sample_grad_norms

    pending, count = ctx.pending_samples(table, ["messages"])
    device = compute_device()
    stats: dict[str, Any] = {
        "model": spec.model,
        "device": device.describe(),
        "pending": count,
        "runs": spec.runs,
        "train_steps": spec.train_steps,
    }
    schema = early_training_schema(signal)
    writer = ctx.rows_writer(schema)
    if count == 0:
        writer.close()
        return StageOutput(writer.path, rows_in=0, stats=stats, metadata=stats)
    started = time.perf_counter()
    per_run = np.full((spec.runs, count), np.nan)
    train_pool = ctx.active_samples(["messages"]).column("messages").to_pylist()
    sample_ids: list[str] = []
    for run in range(spec.runs):
        seed = spec.seed + run
        draw = random.Random(seed).sample(
            range(len(train_pool)),
            min(len(train_pool), spec.train_steps * spec.lora.batch_size * spec.lora.grad_accumulation),
        )
        # only the step plan differs from spec.lora (the adapters are the same)
        settings = spec.lora.model_copy(
            update={"max_steps": spec.train_steps, "epochs": max(spec.lora.epochs, spec.train_steps)}
        )
        tuned, tokenizer = finetune_fresh_lora(
            spec, [train_pool[i] for i in draw], settings, seed=seed, device=device.name
        )
        model = tuned.model.eval()
        del tuned  # the optimizer state goes now, the model with `del model` below
        capture = LoraGradientCapture(model) if signal == "grand" else None
        offset = 0
        for chunk in ctx.progress(
            iter_parquet_batches(pending, CHUNK_SAMPLES),
            total=-(-count // CHUNK_SAMPLES),
            desc=f"run {run + 1}/{spec.runs}: scoring {count} samples",
        ):
            if run == 0:
                sample_ids.extend(chunk.column("sample_id").to_pylist())
            encoded = [
                encode_conversation(tokenizer, m, spec.max_length, spec.model, spec.turns)
                for m in chunk.column("messages").to_pylist()
            ]

            # defaults bind this iteration's values (the closure runs within it, but says so)
            def score(
                batch: list[int],
                offset: int = offset,
                encoded: list = encoded,
                model: Any = model,
                tokenizer: Any = tokenizer,
                capture: Any = capture,
                run: int = run,
            ) -> None:
                tensors = collate([encoded[i] for i in batch], tokenizer.pad_token_id, device.name)
                if capture is not None:
                    values = per_sample_grad_norms(model, tensors, capture)
                else:
                    with torch.inference_mode():
                        values = forward_signals(model, tensors).el2n
                per_run[run, [offset + i for i in batch]] = values.double().cpu().numpy()

            run_batches_with_oom_backoff(score, longest_first(encoded), spec.batch_size, stats)
            offset += len(encoded)
        del model
    means = np.nanmean(per_run, axis=0)
    stds = np.nanstd(per_run, axis=0)
    writer.write(
        pa.table(
            {
                "sample_id": sample_ids,
                signal: [None if np.isnan(v) else float(v) for v in means],
                f"{signal}_std": [None if np.isnan(v) else float(v) for v in stds],
                "runs": [spec.runs] * len(sample_ids),
            },
            schema=schema,
        )
    )
    writer.close()
    seconds = time.perf_counter() - started
    stats["samples_per_second_per_run"] = round(count * spec.runs / seconds, 2) if seconds else None
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)
