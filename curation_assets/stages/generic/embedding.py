"""Stage `embedding`: sentence embeddings of each sample's text, computed incrementally."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import pyarrow as pa

from curation_assets.models.device import compute_device
from curation_assets.models.embeddings import SentenceEmbedder
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.registry import StageKind, register_kind
from curation_assets.stages.core.sentence_embedding import SentenceEmbeddingInput, render_texts

STORE_BATCH = 1_024  # samples per staged batch; the model sees `batch_size` at a time


class EmbeddingSpec(SentenceEmbeddingInput):
    """Embed the text made from `template` with a sentence-transformers model."""

    kind: Literal["embedding"]


def embedding_schema() -> pa.Schema:
    return pa.schema(
        [
            ("sample_id", pa.string()),
            ("embedding", pa.list_(pa.float32())),
            ("n_tokens", pa.int32()),
            ("truncated", pa.bool_()),
        ]
    )


def run_embedding(spec: EmbeddingSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("embeddings", ["instruction", "input", "output", "messages"])
    stats: dict = {"model": spec.model, "device": compute_device().describe(), "pending": count}
    if count == 0:
        with ctx.rows_writer(embedding_schema()) as writer:
            pass
        return StageOutput(writer.path, rows_in=0, stats=stats, metadata=stats)
    embedder = SentenceEmbedder(spec.model, max_seq_length=spec.max_seq_length)
    truncated = 0
    started = time.perf_counter()
    with ctx.rows_writer(embedding_schema()) as writer:
        batches = iter_parquet_batches(pending, STORE_BATCH)
        for batch in ctx.progress(batches, total=-(-count // STORE_BATCH), desc=f"embedding {count} samples"):
            encoded = embedder.encode(
                render_texts(batch, spec.template), batch_size=spec.batch_size, normalize=spec.normalize
            )
            truncated += int(encoded.truncated.sum())
            flat = pa.array(encoded.vectors.reshape(-1), type=pa.float32())
            offsets = pa.array(np.arange(0, encoded.vectors.size + 1, encoded.vectors.shape[1], dtype=np.int32))
            writer.write(
                pa.table(
                    {
                        "sample_id": batch.column("sample_id"),
                        "embedding": pa.ListArray.from_arrays(offsets, flat),
                        "n_tokens": pa.array(encoded.n_tokens, pa.int32()),
                        "truncated": pa.array(encoded.truncated),
                    },
                    schema=embedding_schema(),
                )
            )
    seconds = time.perf_counter() - started
    stats.update(
        {
            "dimension": embedder.dimension,
            "max_seq_length": embedder.max_seq_length,
            "truncated": truncated,
            "samples_per_second": round(count / seconds, 2) if seconds else None,
        }
    )
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)


EMBEDDING = register_kind(
    StageKind(
        kind="embedding",
        role="stage",
        shardable=True,
        spec=EmbeddingSpec,
        run=run_embedding,
        version="1",
        summary="Sentence embeddings of each sample (sentence-transformers; packaged MiniLM by default).",
        table="embeddings",
        schema_file="schema/stages/embedding.sql",
        rows_schema=embedding_schema(),
        column_lineage={
            "embedding": ("instruction", "input", "output", "messages"),
            "n_tokens": ("instruction", "input", "output", "messages"),
            "truncated": ("instruction", "input", "output", "messages"),
        },
        tags=("python", "torch", "sentence_transformers"),
    )
)
