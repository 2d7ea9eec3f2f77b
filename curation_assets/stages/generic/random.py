"""Selection `random`: a seeded uniform sample of the active pool (the baseline every method must beat)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from curation_assets.methods.ranking import random_subset
from curation_assets.stages.core.budget import BudgetedSelectionSpec
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.registry import StageKind, register_kind


class RandomSelectionSpec(BudgetedSelectionSpec):
    """Uniform sample without replacement; same seed and pool give the same selection."""

    kind: Literal["random"]
    seed: int = Field(0, description="Random seed (numpy PCG64).")


def run_random(spec: RandomSelectionSpec, ctx: StageContext) -> StageOutput:
    sample_ids = ctx.active_samples().column("sample_id").to_pylist()  # sorted: independent of insert order
    k = spec.budget_for(len(sample_ids))
    chosen = random_subset(len(sample_ids), k, spec.seed)
    members = ctx.write_members([sample_ids[i] for i in chosen])
    return StageOutput(
        members,
        rows_in=len(sample_ids),
        stats={"pool": len(sample_ids), "budget": k},
        metadata={"pool": len(sample_ids), "budget": k},
    )


RANDOM = register_kind(
    StageKind(
        kind="random",
        role="selection",
        spec=RandomSelectionSpec,
        run=run_random,
        version="1",
        summary="Seeded uniform random sample of the active samples.",
        tags=("python", "numpy"),
    )
)
