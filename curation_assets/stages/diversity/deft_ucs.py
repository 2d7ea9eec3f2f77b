"""Selection `deft_ucs` (DEFT-UCS): K-Means on an embedding stage's vectors, then per cluster the
points closest to (easy) and farthest from (hard) the centroid."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from curation_assets.methods.coresets import deft_ucs
from curation_assets.stages.core.budget import BudgetedSelectionSpec
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.embedding_input import EmbeddingInput
from curation_assets.stages.core.registry import StageKind, register_kind


class DeftUcsSpec(EmbeddingInput, BudgetedSelectionSpec):
    """DEFT-UCS: per K-Means cluster, the points closest to the centroid ("easy") and the farthest ("hard")."""

    kind: Literal["deft_ucs"]
    n_clusters: int = Field(7, gt=0, description="K-Means clusters (paper: 7).")
    sampling: Literal["per_cluster", "proportional"] = Field(
        "per_cluster",
        description=(
            "per_cluster (the paper): a fixed amount A per cluster, alpha·A easy + beta·A hard; proportional "
            "(ours): cluster budget k·|c|/N, alpha of it easy, the rest hard."
        ),
    )
    per_cluster: int | None = Field(
        None,
        gt=0,
        description=(
            "A, rows per cluster (per_cluster sampling); instead of `budget`/`fraction`, which otherwise set the "
            "largest A whose full clusters fit them."
        ),
    )
    alpha: float = Field(0.5, ge=0, le=1, description="Easy share: of A (per_cluster) or of the cluster budget.")
    beta: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "Hard share of A, independent of alpha (per_cluster); default 1 - alpha; proportional: 1 - alpha."
        ),
    )
    base_size: int = Field(0, ge=0, description="D_base: rows drawn stratified per cluster first; part of the budget.")

    @model_validator(mode="after")
    def _one_budget(self) -> DeftUcsSpec:  # replaces BudgetedSelectionSpec's: `per_cluster` is a third way
        given = [key for key in ("budget", "fraction", "per_cluster") if getattr(self, key) is not None]
        if self.sampling == "proportional":
            if self.per_cluster is not None or len(given) != 1:
                raise ValueError("proportional sampling takes exactly one of `budget` or `fraction`")
            if self.beta is not None and abs(self.alpha + self.beta - 1) > 1e-9:
                raise ValueError("proportional sampling couples beta = 1 - alpha: leave `beta` unset")
        elif len(given) != 1:
            raise ValueError("give exactly one of `budget`, `fraction` or `per_cluster` (A)")
        return self


def run_deft_ucs(spec: DeftUcsSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    k = spec.budget_for(len(sample_ids)) if spec.per_cluster is None else None
    if k is not None and spec.base_size > k:
        raise ValueError(f"{spec.name}: base_size {spec.base_size} exceeds the budget {k}")
    if spec.base_size > len(sample_ids):
        raise ValueError(f"{spec.name}: base_size {spec.base_size} exceeds the pool of {len(sample_ids)}")
    result = deft_ucs(
        np.asarray(x),
        k,
        n_clusters=spec.n_clusters,
        alpha=spec.alpha,
        beta=spec.beta,
        per_cluster=spec.per_cluster,
        sampling=spec.sampling,
        base_size=spec.base_size,
        seed=spec.seed,
    )
    chosen = [sample_ids[i] for i in result.indices]
    roles = result.role.tolist()
    stats = {
        "pool": len(sample_ids),
        "budget": k,
        "selected": len(chosen),
        "sampling": spec.sampling,
        "per_cluster_amount": result.amount,
        "alpha": spec.alpha,
        "beta": 1 - spec.alpha if spec.beta is None else spec.beta,
        "clusters": int(result.budgets.size),
        "easy": roles.count("easy"),
        "hard": roles.count("hard"),
        "base": roles.count("base"),
        "per_cluster_budget": {str(c): int(b) for c, b in enumerate(result.budgets)},
    }
    details = ctx.write_details(
        {
            "sample_id": chosen,
            "role": roles,
            "cluster": result.labels[result.indices].tolist(),
            "value": result.distance.tolist(),
        }
    )
    return StageOutput(
        ctx.write_members(chosen, result.distance.tolist()),
        rows_in=len(sample_ids),
        stats=stats,
        metadata=stats,
        details_file=details,
    )


DEFT_UCS = register_kind(
    StageKind(
        kind="deft_ucs",
        role="selection",
        spec=DeftUcsSpec,
        run=run_deft_ucs,
        version="1",
        summary="DEFT-UCS easy/hard sampling around K-Means centroids.",
        tags=("python", "numpy", "faiss"),
    )
)
