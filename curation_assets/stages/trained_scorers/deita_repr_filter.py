"""Selection `deita_repr_filter` (DEITA, Liu et al. 2024): walk samples by score, best first,
keep one only if its cosine similarity to its nearest already-kept sample is <= tau, stop at
the budget. The score is any numeric column of any stage (`stage`, `column`, as `top_score`
takes it); vectors come from an `embedding` stage. The method (exact, blocked faiss walk) and
how it differs from distilabel's DeitaFiltering: methods/diversity_filter.py.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation_assets.arrow_compute import pc
from curation_assets.methods.diversity_filter import deita_repr_filter
from curation_assets.stages.core.budget import BudgetedSelectionSpec, StageColumnInput
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.embedding_input import EmbeddingInput
from curation_assets.stages.core.registry import StageKind, register_kind
from curation_assets.stages.core.score_input import aligned_scores


class DeitaReprFilterSpec(EmbeddingInput, StageColumnInput, BudgetedSelectionSpec):
    """Score-first walk keeping samples whose nearest kept neighbour has cosine similarity <= tau."""

    kind: Literal["deita_repr_filter"]
    tau: float = Field(
        0.9,
        ge=-1,
        le=1,
        description=("Keep a sample only if its cosine similarity to every kept sample is <= tau (published: 0.9)."),
    )
    order: Literal["descending", "ascending"] = Field(
        "descending",
        description=("descending walks the highest score first (DEITA); ascending the lowest (e.g. a predicted loss)."),
    )


def run_deita_repr_filter(spec: DeitaReprFilterSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    rows = ctx.stage_rows(spec.stage, [spec.column])
    scores = aligned_scores(sample_ids, rows, spec.column)
    scored = int((~np.isnan(scores)).sum())
    k = spec.budget_for(scored) if scored else 0
    result = deita_repr_filter(np.asarray(x), scores, k, tau=spec.tau, descending=spec.order == "descending")
    kept = result.kept.tolist()
    dropped = np.flatnonzero(result.duplicate_of >= 0)
    stats = {
        "pool": len(sample_ids),
        "scored": scored,
        "unscored": len(sample_ids) - scored,
        "scores_without_embedding": rows.num_rows
        - int(pc.sum(pc.is_in(rows.column("sample_id"), pa.array(sample_ids, pa.string()))).as_py() or 0),
        "budget": k,
        "walked": result.walked,
        "selected": len(kept),
        "dropped_too_similar": int(dropped.size),
        "budget_reached": len(kept) >= k,
        "tau": spec.tau,
    }
    details = ctx.write_details(
        {
            "sample_id": [sample_ids[i] for i in dropped],
            "role": ["too_similar"] * dropped.size,
            "related_id": [sample_ids[result.duplicate_of[i]] for i in dropped],
            "value": result.similarity[dropped].tolist(),
        }
    )
    members = ctx.write_members([sample_ids[i] for i in kept], scores[kept].tolist())
    return StageOutput(members, rows_in=len(sample_ids), stats=stats, metadata=dict(stats), details_file=details)


DEITA_REPR_FILTER = register_kind(
    StageKind(
        kind="deita_repr_filter",
        role="selection",
        spec=DeitaReprFilterSpec,
        run=run_deita_repr_filter,
        version="1",
        summary="DEITA repr filter: best score first, skip samples within cosine tau of a kept one (Liu et al. 2024).",
        tags=("python", "numpy", "faiss"),
    )
)
