"""Selection `kmeans_coreset` ("Maybe only 0.5% data is needed"): K-Means on an embedding stage's
vectors, then k-center greedy inside each cluster with a budget proportional to its size."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from curation_assets.methods.coresets import kmeans_kcenter_coreset
from curation_assets.stages.core.budget import BudgetedSelectionSpec
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.embedding_input import EmbeddingInput
from curation_assets.stages.core.registry import StageKind, register_kind


class KMeansCoresetSpec(EmbeddingInput, BudgetedSelectionSpec):
    """K-Means into K clusters, then k-center greedy per cluster with a proportional budget."""

    kind: Literal["kmeans_coreset"]
    n_clusters: int = Field(10, gt=0, description="K for faiss K-Means (capped at the pool size).")


def run_kmeans_coreset(spec: KMeansCoresetSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    k = spec.budget_for(len(sample_ids))
    result = kmeans_kcenter_coreset(np.asarray(x), k, spec.n_clusters, seed=spec.seed)
    chosen = [sample_ids[i] for i in result.indices]
    scores = np.where(np.isinf(result.distance), np.nan, result.distance)
    cluster_sizes = np.bincount(result.labels, minlength=result.budgets.size)
    stats = {
        "pool": len(sample_ids),
        "budget": k,
        "clusters": int(result.budgets.size),
        "per_cluster": {
            str(c): {"size": int(cluster_sizes[c]), "selected": int(result.budgets[c])}
            for c in range(result.budgets.size)
        },
    }
    details = ctx.write_details(
        {
            "sample_id": chosen,
            "role": result.role.tolist(),
            "cluster": result.labels[result.indices].tolist(),
            "value": scores.tolist(),
        }
    )
    return StageOutput(
        ctx.write_members(chosen, scores.tolist()),
        rows_in=len(sample_ids),
        stats=stats,
        metadata=stats,
        details_file=details,
    )


KMEANS_CORESET = register_kind(
    StageKind(
        kind="kmeans_coreset",
        role="selection",
        spec=KMeansCoresetSpec,
        run=run_kmeans_coreset,
        version="1",
        summary="K-Means + per-cluster k-center coreset ('Maybe only 0.5% data is needed').",
        tags=("python", "numpy", "faiss"),
    )
)
