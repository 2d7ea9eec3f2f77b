"""Stage `lm_loss`: per-sample response loss and perplexity under a causal LM, batched."""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import pyarrow as pa

from curation_assets.models.chat_format import collate, longest_first
from curation_assets.models.device import compute_device
from curation_assets.stages.core.causal_lm import (
    CHUNK_SAMPLES,
    CausalLMInput,
    encode_batch,
    load_model_for,
    run_batches_with_oom_backoff,
)
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.registry import StageKind, register_kind

LM_LOSS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("loss", pa.float64()),
        ("perplexity", pa.float64()),
        ("el2n", pa.float64()),
        ("n_response_tokens", pa.int32()),
        ("n_tokens", pa.int32()),
        ("truncated", pa.bool_()),
    ]
)


class LmLossSpec(CausalLMInput):
    """Mean cross-entropy of the labelled assistant turns (`turns`) given the conversation before them."""

    kind: Literal["lm_loss"]


def run_lm_loss(spec: LmLossSpec, ctx: StageContext) -> StageOutput:
    import torch

    from curation_assets.methods.lm_signals import forward_signals

    pending, count = ctx.pending_samples("lm_loss", ["messages"])
    device = compute_device()
    stats: dict[str, Any] = {
        "model": spec.model,
        "device": device.describe(),
        "pending": count,
        "truncated": 0,
        "empty_response": 0,
    }
    writer = ctx.rows_writer(LM_LOSS_SCHEMA)
    if count:
        model, tokenizer = load_model_for(spec)
        batch_size = spec.batch_size
        started = time.perf_counter()
        chunks = iter_parquet_batches(pending, CHUNK_SAMPLES)
        for chunk in ctx.progress(chunks, total=-(-count // CHUNK_SAMPLES), desc=f"scoring {count} samples"):
            encoded = encode_batch(tokenizer, chunk.column("messages").to_pylist(), spec)
            results: dict[int, Any] = {}

            def score(batch: list[int], encoded: list = encoded, results: dict[int, Any] = results) -> None:
                tensors = collate([encoded[i] for i in batch], tokenizer.pad_token_id, device.name)
                with torch.inference_mode():
                    signals = forward_signals(model, tensors)
                for row, i in enumerate(batch):
                    results[i] = (float(signals.loss[row]), float(signals.el2n[row]))

            batch_size = run_batches_with_oom_backoff(score, longest_first(encoded), batch_size, stats)
            losses = [results[i][0] for i in range(len(encoded))]
            stats["truncated"] += sum(e.truncated for e in encoded)
            stats["empty_response"] += sum(math.isnan(v) for v in losses)
            writer.write(
                pa.table(
                    {
                        "sample_id": chunk.column("sample_id"),
                        "loss": [None if math.isnan(v) else v for v in losses],
                        "perplexity": [None if math.isnan(v) else math.exp(min(v, 700.0)) for v in losses],
                        "el2n": [None if math.isnan(results[i][1]) else results[i][1] for i in range(len(encoded))],
                        "n_response_tokens": [e.n_response_tokens for e in encoded],
                        "n_tokens": [len(e.input_ids) for e in encoded],
                        "truncated": [e.truncated for e in encoded],
                    },
                    schema=LM_LOSS_SCHEMA,
                )
            )
        seconds = time.perf_counter() - started
        stats["samples_per_second"] = round(count / seconds, 2) if seconds else None
        stats["final_batch_size"] = batch_size
    writer.close()
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)


LM_LOSS = register_kind(
    StageKind(
        kind="lm_loss",
        role="stage",
        shardable=True,
        spec=LmLossSpec,
        run=run_lm_loss,
        version="1",
        summary="Response loss / perplexity / EL2N under a causal LM (packaged SmolLM2-135M by default).",
        table="lm_loss",
        schema_file="schema/stages/lm_loss.sql",
        rows_schema=LM_LOSS_SCHEMA,
        column_lineage=dict.fromkeys(
            ("loss", "perplexity", "el2n", "n_response_tokens", "n_tokens", "truncated"), ("messages",)
        ),
        tags=("python", "torch", "transformers"),
    )
)
