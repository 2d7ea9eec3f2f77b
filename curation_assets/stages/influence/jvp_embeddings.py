"""Stage `jvp_embeddings` (Influence Distillation, Nikdan et al. 2025): a cheap per-sample
embedding from forward-mode JVPs through the first transformer blocks (models/jvp.py).
The `influence_distillation` selection propagates landmark gradients along them."""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation_assets.models.chat_format import collate, longest_first
from curation_assets.models.device import compute_device
from curation_assets.stages.core.causal_lm import (
    CHUNK_SAMPLES,
    CausalLMInput,
    encode_batch,
    run_batches_with_oom_backoff,
)
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.registry import StageKind, register_kind

JVP_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("n_tokens", pa.int32()),
        ("truncated", pa.bool_()),
    ]
)


class JvpEmbeddingsSpec(CausalLMInput):
    """Tangents of the first blocks' last-token output along seeded random parameter directions."""

    kind: Literal["jvp_embeddings"]
    num_blocks: int = Field(4, gt=0, description="Transformer blocks the JVP runs through (published: 4).")
    num_tangents: int = Field(2, gt=0, description="Random Gaussian tangent directions (published: 2).")
    dim: int = Field(
        4096,
        gt=0,
        description=(
            "Embedding dimensions: the concatenated tangents (num_tangents x hidden size) are projected to `dim` "
            "with a seeded Rademacher matrix when longer, kept as they are otherwise (published: 4096)."
        ),
    )
    seed: int = Field(0, description="Seed of the tangent directions and the projection.")


def run_jvp_embeddings(spec: JvpEmbeddingsSpec, ctx: StageContext) -> StageOutput:
    from curation_assets.models.causal_lm import fresh_causal_lm
    from curation_assets.models.jvp import JvpEmbedder

    pending, count = ctx.pending_samples("jvp_embeddings", ["messages"])
    device = compute_device()
    stats: dict[str, Any] = {"model": spec.model, "device": device.describe(), "pending": count, "truncated": 0}
    writer = ctx.resumable_rows_writer("jvp_embeddings", JVP_SCHEMA)  # a part per chunk; resumes there
    if count:
        model, tokenizer = fresh_causal_lm(spec.model, spec.chat_template)
        embedder = JvpEmbedder(model, spec.num_blocks, spec.num_tangents, spec.dim, spec.seed)
        stats.update({"dimension": embedder.dim, "raw_dimension": embedder.raw_dim})
        started = time.perf_counter()
        chunks = iter_parquet_batches(pending, CHUNK_SAMPLES)
        for chunk in ctx.progress(chunks, total=-(-count // CHUNK_SAMPLES), desc=f"JVP embeddings of {count}"):
            encoded = encode_batch(tokenizer, chunk.column("messages").to_pylist(), spec)
            vectors = np.zeros((len(encoded), embedder.dim), dtype=np.float32)

            def embed(batch: list[int], encoded: list = encoded, vectors: np.ndarray = vectors) -> None:
                tensors = collate([encoded[i] for i in batch], tokenizer.pad_token_id)
                out = embedder.embed({k: tensors[k].to(device.name) for k in ("input_ids", "attention_mask")})
                vectors[batch] = out.cpu().numpy()

            run_batches_with_oom_backoff(embed, longest_first(encoded), spec.batch_size, stats)
            stats["truncated"] += sum(e.truncated for e in encoded)
            offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
            writer.write(
                pa.table(
                    {
                        "sample_id": chunk.column("sample_id"),
                        "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), pa.float32())),
                        "n_tokens": pa.array([len(e.input_ids) for e in encoded], pa.int32()),
                        "truncated": pa.array([e.truncated for e in encoded]),
                    },
                    schema=JVP_SCHEMA,
                )
            )
        seconds = time.perf_counter() - started
        stats["samples_per_second"] = round(count / seconds, 2) if seconds else None
    return StageOutput(writer.close(), rows_in=count, stats=stats, metadata=stats)


JVP_EMBEDDINGS = register_kind(
    StageKind(
        kind="jvp_embeddings",
        role="stage",
        shardable=True,
        spec=JvpEmbeddingsSpec,
        run=run_jvp_embeddings,
        version="1",
        summary="Influence Distillation JVP embeddings: first blocks' output tangents along random directions.",
        table="jvp_embeddings",
        schema_file="schema/stages/jvp_embeddings.sql",
        rows_schema=JVP_SCHEMA,
        column_lineage={"embedding": ("messages",), "n_tokens": ("messages",), "truncated": ("messages",)},
        tags=("python", "torch"),
    )
)
