"""Selection `kcenter_greedy` (Sener & Savarese 2018): a k-center greedy coreset on an embedding
stage's vectors (Euclidean distance); members staged with rank and score."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import Field

from curation_assets.methods.kcenter import k_center_greedy
from curation_assets.stages.core.budget import BudgetedSelectionSpec
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.embedding_input import EmbeddingInput
from curation_assets.stages.core.registry import StageKind, register_kind, selection_reference_problems


class KCenterSpec(EmbeddingInput, BudgetedSelectionSpec):
    """k-center greedy (Sener & Savarese 2018) on Euclidean distance between embeddings."""

    kind: Literal["kcenter_greedy"]
    seed_selection: str | None = Field(
        None, description=("A selection whose members start as centres (they count towards the budget).")
    )

    def references(self) -> dict[str, str]:
        refs = super().references()
        return {**refs, "seed_selection": self.seed_selection} if self.seed_selection else refs

    def check_references(
        self, stage_kinds: Mapping[str, StageKind], selection_names: set[str]
    ) -> list[tuple[str, str]]:
        return [
            *super().check_references(stage_kinds, selection_names),
            *selection_reference_problems("seed_selection", self.seed_selection, stage_kinds),
        ]


def run_kcenter(spec: KCenterSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    k = spec.budget_for(len(sample_ids))
    seeds: list[int] = []
    if spec.seed_selection:
        position = {sid: i for i, sid in enumerate(sample_ids)}
        members = ctx.selection_members(spec.seed_selection).column("sample_id").to_pylist()
        seeds = [position[sid] for sid in members if sid in position]
    result = k_center_greedy(x, k, seed_idx=seeds, rng=np.random.default_rng(spec.seed))
    chosen = [sample_ids[i] for i in result.indices]
    radii = np.where(np.isinf(result.radii), np.nan, result.radii)
    stats = {"pool": len(sample_ids), "budget": k, "seeds": len(seeds), "coverage_radius": result.coverage_radius}
    details = ctx.write_details(
        {
            "sample_id": chosen,
            "role": ["seed" if i < len(seeds) else "kcenter" for i in range(len(chosen))],
            "value": radii.tolist(),
        }
    )
    return StageOutput(
        ctx.write_members(chosen, radii.tolist()),
        rows_in=len(sample_ids),
        stats=stats,
        metadata=stats,
        details_file=details,
    )


KCENTER_GREEDY = register_kind(
    StageKind(
        kind="kcenter_greedy",
        role="selection",
        spec=KCenterSpec,
        run=run_kcenter,
        version="1",
        summary="k-center greedy coreset on embeddings (Sener & Savarese 2018).",
        tags=("python", "numpy", "faiss"),
    )
)
