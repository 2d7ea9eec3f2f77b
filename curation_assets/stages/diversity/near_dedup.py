"""Selection `near_dedup`: drop samples whose cosine similarity to an earlier kept one exceeds a
threshold (faiss inner-product search)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from curation_assets.methods.diversity_filter import similarity_filter
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.embedding_input import EmbeddingInput
from curation_assets.stages.core.registry import StageKind, register_kind


class NearDedupSpec(EmbeddingInput):
    """Keep a sample unless its cosine similarity to an earlier kept sample exceeds `threshold`."""

    kind: Literal["near_dedup"]
    threshold: float = Field(0.95, gt=-1, lt=1, description="Cosine similarity above which a sample is a duplicate.")


def run_near_dedup(spec: NearDedupSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")  # sorted by sample_id: a stable walk order
    x = np.asarray(x)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    result = similarity_filter(unit, spec.threshold)
    dropped = np.flatnonzero(result.duplicate_of >= 0)
    stats = {
        "pool": len(sample_ids),
        "kept": int(result.kept.size),
        "dropped": int(dropped.size),
        "threshold": spec.threshold,
    }
    details = ctx.write_details(
        {
            "sample_id": [sample_ids[i] for i in dropped],
            "role": ["duplicate"] * dropped.size,
            "related_id": [sample_ids[result.duplicate_of[i]] for i in dropped],
            "value": result.similarity[dropped].tolist(),
        }
    )
    return StageOutput(
        ctx.write_members([sample_ids[i] for i in result.kept]),
        rows_in=len(sample_ids),
        stats=stats,
        metadata=stats,
        details_file=details,
    )


NEAR_DEDUP = register_kind(
    StageKind(
        kind="near_dedup",
        role="selection",
        spec=NearDedupSpec,
        run=run_near_dedup,
        version="1",
        summary="Near-duplicate removal by cosine similarity (faiss).",
        tags=("python", "numpy", "faiss"),
    )
)
