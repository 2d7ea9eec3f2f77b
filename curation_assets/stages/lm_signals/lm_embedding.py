"""Stage `lm_embedding`: each conversation's vector as DEITA's repr filter embeds it (Liu et al.
2024): the causal LM's last-layer hidden state at the last token of the whole rendered
conversation (models/lm_embedder.py). Incremental like `embedding` (only samples without a row
for the current config run), batched with right padding, longest first, `CHUNK_SAMPLES` samples
tokenised at a time, so memory is bounded by one chunk of token ids and one batch of activations.
The vectors land in `lm_embeddings.embedding`, which the embedding-reading selections
(`deita_repr_filter`, `kcenter_greedy`, ...) read like `embeddings.embedding`.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation_assets.models.chat_format import EncodedSample, collate, longest_first
from curation_assets.models.device import compute_device
from curation_assets.models.lm_embedder import conversation_ids, last_token_states
from curation_assets.stages.core.causal_lm import (
    CHUNK_SAMPLES,
    CausalLMInput,
    load_model_for,
    run_batches_with_oom_backoff,
)
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.registry import StageKind, register_kind

LM_EMBEDDING_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("n_tokens", pa.int32()),
        ("truncated", pa.bool_()),
    ]
)


class LmEmbeddingSpec(CausalLMInput):
    """Last-token final hidden state of a causal LM over the whole conversation (DEITA's embedder)."""

    kind: Literal["lm_embedding"]
    max_length: int = Field(
        2048,
        gt=8,
        description=(
            "Tokens per conversation (DEITA: 2048); longer ones keep their start and are counted as truncated."
        ),
    )
    render: Literal["vicuna_v1.1", "chat_template"] = Field(
        "vicuna_v1.1",
        description=(
            "vicuna_v1.1: DEITA's rendering (fixed system prompt, 'USER: ... ASSISTANT: ...</s>'); "
            "chat_template: the tokenizer's chat template (or `chat_template`)."
        ),
    )
    normalize: bool = Field(
        False,
        description=(
            "L2-normalise the stored vectors (DEITA stores them raw; cosine-based selections normalise anyway)."
        ),
    )


def run_lm_embedding(spec: LmEmbeddingSpec, ctx: StageContext) -> StageOutput:
    import torch

    from curation_assets.methods.lm_signals import decoder_and_head

    pending, count = ctx.pending_samples("lm_embeddings", ["messages"])
    device = compute_device()
    stats: dict[str, Any] = {
        "model": spec.model,
        "device": device.describe(),
        "pending": count,
        "render": spec.render,
        "truncated": 0,
    }
    writer = ctx.rows_writer(LM_EMBEDDING_SCHEMA)
    if count:
        model, tokenizer = load_model_for(spec)
        decoder, _ = decoder_and_head(model)
        batch_size = spec.batch_size
        started = time.perf_counter()
        dimension = 0
        chunks = iter_parquet_batches(pending, CHUNK_SAMPLES)
        for chunk in ctx.progress(chunks, total=-(-count // CHUNK_SAMPLES), desc=f"embedding {count} conversations"):
            full = [conversation_ids(tokenizer, m, spec.render) for m in chunk.column("messages").to_pylist()]
            if empty := [sid for sid, ids in zip(chunk.column("sample_id").to_pylist(), full) if not ids]:
                raise ValueError(
                    f"{spec.name}: conversation of sample {empty[0]!r} renders to no tokens "
                    f"({len(empty)} such samples in this chunk); check its messages"
                )
            # labels are unused here: collate only pads input_ids and builds the attention mask
            encoded = [
                EncodedSample(ids[: spec.max_length], ids[: spec.max_length], len(ids) > spec.max_length)
                for ids in full
            ]
            vectors: list[Any] = [None] * len(encoded)

            def embed(batch: list[int], encoded: list[EncodedSample] = encoded, vectors: list = vectors) -> None:
                tensors = collate([encoded[i] for i in batch], tokenizer.pad_token_id, device.name)
                with torch.inference_mode():
                    states = last_token_states(decoder, tensors["input_ids"], tensors["attention_mask"]).float()
                    if spec.normalize:
                        states = torch.nn.functional.normalize(states, dim=-1)
                for row, i in enumerate(batch):
                    vectors[i] = states[row].cpu().numpy()

            batch_size = run_batches_with_oom_backoff(embed, longest_first(encoded), batch_size, stats)
            matrix = np.stack(vectors).astype(np.float32)
            dimension = matrix.shape[1]
            offsets = pa.array(np.arange(0, matrix.size + 1, dimension, dtype=np.int32))
            stats["truncated"] += sum(e.truncated for e in encoded)
            writer.write(
                pa.table(
                    {
                        "sample_id": chunk.column("sample_id"),
                        "embedding": pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), pa.float32())),
                        "n_tokens": pa.array([len(ids) for ids in full], pa.int32()),
                        "truncated": [e.truncated for e in encoded],
                    },
                    schema=LM_EMBEDDING_SCHEMA,
                )
            )
        seconds = time.perf_counter() - started
        stats.update(
            {
                "dimension": dimension,
                "final_batch_size": batch_size,
                "samples_per_second": round(count / seconds, 2) if seconds else None,
            }
        )
    writer.close()
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)


LM_EMBEDDING = register_kind(
    StageKind(
        kind="lm_embedding",
        role="stage",
        shardable=True,
        spec=LmEmbeddingSpec,
        run=run_lm_embedding,
        version="1",
        summary="DEITA's embedding: a causal LM's last-token final hidden state over the whole conversation.",
        table="lm_embeddings",
        schema_file="schema/stages/lm_embedding.sql",
        rows_schema=LM_EMBEDDING_SCHEMA,
        column_lineage=dict.fromkeys(("embedding", "n_tokens", "truncated"), ("messages",)),
        tags=("python", "torch", "transformers"),
    )
)
