"""Stage `lm_loss`: per-sample response loss and perplexity under a causal LM, batched."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from curation_assets.methods.lm_signals import forward_signals
from curation_assets.models.causal_lm import PACKAGED_SMOLLM2, load_causal_lm
from curation_assets.models.chat_format import EncodedSample, Turns, collate, encode_conversation, longest_first
from curation_assets.models.device import compute_device
from curation_assets.stages.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.registry import StageKind, StageSpec, register_kind

CHUNK_SAMPLES = 256  # samples tokenised and length-sorted together; bounds memory

LM_LOSS_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("loss", pa.float64()), ("perplexity", pa.float64()), ("el2n", pa.float64()),
    ("n_response_tokens", pa.int32()), ("n_tokens", pa.int32()), ("truncated", pa.bool_()),
])


class CausalLMSpec(StageSpec):
    """Keys shared by stages that run the small causal LM."""

    model: str = Field(PACKAGED_SMOLLM2, description=(
        "Causal LM: the packaged SmolLM2-135M-Instruct (default, offline), a Hugging Face name, a local folder "
        "or a .gguf file."))
    max_length: int = Field(1024, gt=8, description="Tokens per sample (prompt + response); longer ones are cut.")
    chat_template: str | None = Field(None, description="Jinja chat template for tokenizers that lack one.")
    batch_size: int = Field(8, gt=0, description="Samples per forward pass (halved on out-of-memory).")
    turns: Turns = Field("all", description=(
        "Assistant turns that are labels (trained on / scored): all (Tulu-style SFT, the released LESS code) "
        "or last (the last assistant turn given the conversation before it)."))

    def hashed_config(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"name", "description", "batch_size"})


class LmLossSpec(CausalLMSpec):
    """Mean cross-entropy of the labelled assistant turns (`turns`) given the conversation before them."""

    kind: Literal["lm_loss"]


def load_model_for(spec: CausalLMSpec) -> tuple[Any, Any]:
    model, tokenizer = load_causal_lm(spec.model)
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    return model, tokenizer


def encode_batch(tokenizer: Any, conversations: Sequence[list[dict[str, str]]], spec: CausalLMSpec
                 ) -> list[EncodedSample]:
    """Encode conversations with the spec's max_length and `turns`."""
    return [encode_conversation(tokenizer, c, spec.max_length, spec.model, spec.turns) for c in conversations]


def run_batches_with_oom_backoff(run_batch: Any, indices: list[int], batch_size: int, stats: dict) -> int:
    """Run `run_batch` over `indices` in batches, halving the batch size on out-of-memory."""
    import torch

    start = 0
    while start < len(indices):
        batch = indices[start:start + batch_size]
        try:
            run_batch(batch)
        except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as err:
            out_of_memory = isinstance(err, MemoryError) or "out of memory" in str(err).lower()
            if not out_of_memory or batch_size == 1:
                raise
            batch_size = max(1, batch_size // 2)
            stats["oom_halvings"] = stats.get("oom_halvings", 0) + 1
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start += len(batch)
    return batch_size


def run_lm_loss(spec: LmLossSpec, ctx: StageContext) -> StageOutput:
    import torch

    pending, count = ctx.pending_samples("lm_loss", ["messages"])
    device = compute_device()
    stats: dict[str, Any] = {"model": spec.model, "device": device.describe(), "pending": count,
                             "truncated": 0, "empty_response": 0}
    writer = ctx.rows_writer(LM_LOSS_SCHEMA)
    if count:
        model, tokenizer = load_model_for(spec)
        batch_size = spec.batch_size
        started = time.perf_counter()
        chunks = iter_parquet_batches(pending, CHUNK_SAMPLES)
        for chunk in ctx.progress(chunks, total=-(-count // CHUNK_SAMPLES), desc=f"scoring {count} samples"):
            encoded = encode_batch(tokenizer, chunk.column("messages").to_pylist(), spec)
            results: dict[int, Any] = {}

            def score(batch: list[int]) -> None:
                tensors = collate([encoded[i] for i in batch], tokenizer.pad_token_id, device.name)
                with torch.inference_mode():
                    signals = forward_signals(model, tensors)
                for row, i in enumerate(batch):
                    results[i] = (float(signals.loss[row]), float(signals.el2n[row]))

            batch_size = run_batches_with_oom_backoff(score, longest_first(encoded), batch_size, stats)
            losses = [results[i][0] for i in range(len(encoded))]
            stats["truncated"] += sum(e.truncated for e in encoded)
            stats["empty_response"] += sum(math.isnan(v) for v in losses)
            writer.write(pa.table({
                "sample_id": chunk.column("sample_id"),
                "loss": [None if math.isnan(v) else v for v in losses],
                "perplexity": [None if math.isnan(v) else math.exp(min(v, 700.0)) for v in losses],
                "el2n": [None if math.isnan(results[i][1]) else results[i][1] for i in range(len(encoded))],
                "n_response_tokens": [e.n_response_tokens for e in encoded],
                "n_tokens": [len(e.input_ids) for e in encoded],
                "truncated": [e.truncated for e in encoded],
            }, schema=LM_LOSS_SCHEMA))
        seconds = time.perf_counter() - started
        stats["samples_per_second"] = round(count / seconds, 2) if seconds else None
        stats["final_batch_size"] = batch_size
    writer.close()
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)


LM_LOSS = register_kind(StageKind(
    kind="lm_loss", role="stage", shardable=True, spec=LmLossSpec, run=run_lm_loss, version="1",
    summary="Response loss / perplexity / EL2N under a causal LM (packaged SmolLM2-135M by default).",
    table="lm_loss", schema_file="schema/stages/lm_loss.sql",
    column_lineage={c: ("messages",) for c in ("loss", "perplexity", "el2n", "n_response_tokens", "n_tokens",
                                               "truncated")},
    tags=("python", "torch", "transformers"),
))
