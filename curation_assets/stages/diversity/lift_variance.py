"""Selection `lift_variance` (LIFT phase 2): StandardScaler, PCA, keep rows of high variance."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from curation_assets.methods.lift_variance import lift_variance_selection
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.embedding_input import EmbeddingInput
from curation_assets.stages.core.registry import StageKind, register_kind


class LiftVarianceSpec(EmbeddingInput):
    """LIFT phase 2: StandardScaler, PCA keeping `variance_kept`, keep rows above the percentile of row variance."""

    kind: Literal["lift_variance"]
    variance_kept: float = Field(0.95, gt=0, lt=1, description="Share of variance the PCA keeps.")
    percentile: float = Field(80.0, ge=0, lt=100, description="Keep rows whose variance is above this percentile.")


def run_lift_variance(spec: LiftVarianceSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    result = lift_variance_selection(
        np.asarray(x), variance_kept=spec.variance_kept, percentile=spec.percentile, seed=spec.seed
    )
    chosen = [sample_ids[i] for i in result.indices]
    stats = {
        "pool": len(sample_ids),
        "selected": len(chosen),
        "pca_components": result.n_components,
        "variance_threshold": result.threshold,
    }
    return StageOutput(
        ctx.write_members(chosen, result.row_variance[result.indices].tolist()),
        rows_in=len(sample_ids),
        stats=stats,
        metadata=stats,
    )


LIFT_VARIANCE = register_kind(
    StageKind(
        kind="lift_variance",
        role="selection",
        spec=LiftVarianceSpec,
        run=run_lift_variance,
        version="1",
        summary="LIFT phase-2 PCA row-variance filter.",
        tags=("python", "numpy", "faiss"),
    )
)
