"""Stage `embedding`: sentence embeddings of each sample's text, computed incrementally."""

from __future__ import annotations

import string
import time
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from curation_assets.models.device import compute_device
from curation_assets.models.embeddings import PACKAGED_MINILM, SentenceEmbedder
from curation_assets.stages.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.registry import StageKind, StageSpec, register_kind

TEMPLATE_FIELDS = ("instruction", "input", "output", "conversation", "system")
STORE_BATCH = 1_024  # samples per staged batch; the model sees `batch_size` at a time


class EmbeddingSpec(StageSpec):
    """Embed the text made from `template` with a sentence-transformers model."""

    kind: Literal["embedding"]
    model: str = Field(PACKAGED_MINILM, description=(
        "sentence-transformers model: the packaged all-MiniLM-L6-v2 (default, offline), a Hugging Face name "
        "or a local folder."))
    template: str = Field("{instruction}\n{input}", description=(
        "Text to embed, a Python format string over {instruction}, {input}, {output}, {system} and "
        "{conversation} (every turn as 'role: content')."))
    normalize: bool = Field(True, description="L2-normalise the vectors.")
    max_seq_length: int | None = Field(None, gt=0, description="Override the model's maximum tokens.")
    batch_size: int = Field(64, gt=0, description="Texts per forward pass (does not change results).")

    @field_validator("template")
    @classmethod
    def _known_fields(cls, template: str) -> str:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = names - set(TEMPLATE_FIELDS)
        if unknown or not names:
            raise ValueError(f"template fields must be among {', '.join(TEMPLATE_FIELDS)}; got {sorted(names)}")
        return template

    def hashed_config(self) -> dict:
        return self.model_dump(mode="json", exclude={"name", "description", "batch_size"})


def render_texts(batch: pa.RecordBatch, template: str) -> list[str]:
    """The template filled in for every sample of a batch (conversation = 'role: content' lines)."""
    columns = {name: batch.column(name).to_pylist() for name in ("instruction", "input", "output")}
    conversations = batch.column("messages").to_pylist()
    texts = []
    for i, turns in enumerate(conversations):
        values = {name: columns[name][i] for name in columns}
        values["system"] = next((t["content"] for t in turns if t["role"] == "system"), "")
        if "{conversation}" in template:
            values["conversation"] = "\n".join(f"{t['role']}: {t['content']}" for t in turns)
        texts.append(template.format_map(_Defaults(values)).strip())
    return texts


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        return ""


def embedding_schema() -> pa.Schema:
    return pa.schema([("sample_id", pa.string()), ("embedding", pa.list_(pa.float32())),
                      ("n_tokens", pa.int32()), ("truncated", pa.bool_())])


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
            encoded = embedder.encode(render_texts(batch, spec.template), batch_size=spec.batch_size,
                                      normalize=spec.normalize)
            truncated += int(encoded.truncated.sum())
            flat = pa.array(encoded.vectors.reshape(-1), type=pa.float32())
            offsets = pa.array(np.arange(0, encoded.vectors.size + 1, encoded.vectors.shape[1], dtype=np.int32))
            writer.write(pa.table({
                "sample_id": batch.column("sample_id"),
                "embedding": pa.ListArray.from_arrays(offsets, flat),
                "n_tokens": pa.array(encoded.n_tokens, pa.int32()),
                "truncated": pa.array(encoded.truncated),
            }, schema=embedding_schema()))
    seconds = time.perf_counter() - started
    stats.update({"dimension": embedder.dimension, "max_seq_length": embedder.max_seq_length,
                  "truncated": truncated, "samples_per_second": round(count / seconds, 2) if seconds else None})
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)


EMBEDDING = register_kind(StageKind(
    kind="embedding", role="stage", shardable=True, spec=EmbeddingSpec, run=run_embedding, version="1",
    summary="Sentence embeddings of each sample (sentence-transformers; packaged MiniLM by default).",
    table="embeddings", schema_file="schema/stages/embedding.sql",
    column_lineage={"embedding": ("instruction", "input", "output", "messages"),
                    "n_tokens": ("instruction", "input", "output", "messages"),
                    "truncated": ("instruction", "input", "output", "messages")},
    tags=("python", "torch", "sentence_transformers"),
))
