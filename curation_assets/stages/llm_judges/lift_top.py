"""Selection `lift_top` (LIFT, Xu et al. 2023): length score = min(chars / p98, 1) * 100 over the
rated pool, final = 0.9 * rubric + 0.1 * length, keep the top N."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from curation_assets.methods.ranking import top_k
from curation_assets.stages.core.budget import BudgetedSelectionSpec
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.registry import StageKind, register_kind, stage_reference_problems


class LiftTopSpec(BudgetedSelectionSpec):
    """Top samples by 0.9 * rubric + 0.1 * length score (LIFT's final quality score)."""

    kind: Literal["lift_top"]
    stage: str = Field(description="The `lift_quality` stage whose ratings are used.")
    llm_weight: float = Field(0.9, ge=0, le=1, description="Weight of the rubric score; length gets 1 - this.")
    length_percentile: float = Field(98.0, gt=0, le=100, description="Length score = min(chars / p_this, 1) * 100.")

    def references(self) -> dict[str, str]:
        return {**super().references(), "stage": self.stage}

    def score_sources(self) -> list[tuple[str, str]]:
        return [(self.stage, "llm_score"), (self.stage, "response_chars")]

    def check_references(self, stage_kinds: Any, selection_names: set[str]) -> list[tuple[str, str]]:
        return [
            *super().check_references(stage_kinds, selection_names),
            *stage_reference_problems("stage", self.stage, ("lift_quality",), stage_kinds, selection_names),
        ]


def lift_final_scores(
    llm_score: np.ndarray, response_chars: np.ndarray, llm_weight: float = 0.9, percentile: float = 98.0
) -> np.ndarray:
    """final = w * llm + (1 - w) * min(len / p98(len), 1) * 100; NaN where the rubric is missing."""
    reference = float(np.percentile(response_chars, percentile)) if response_chars.size else 0.0
    length_score = np.minimum(response_chars / reference, 1.0) * 100 if reference > 0 else np.zeros_like(llm_score)
    return llm_weight * llm_score + (1 - llm_weight) * length_score


def run_lift_top(spec: LiftTopSpec, ctx: StageContext) -> StageOutput:
    rows = ctx.stage_rows(spec.stage, ["llm_score", "response_chars"])
    llm = rows.column("llm_score").to_numpy(zero_copy_only=False).astype(np.float64)
    chars = rows.column("response_chars").to_numpy(zero_copy_only=False).astype(np.float64)
    rated = np.flatnonzero(~np.isnan(llm))
    final = lift_final_scores(llm[rated], chars[rated], spec.llm_weight, spec.length_percentile)
    k = spec.budget_for(rows.num_rows) if rated.size else 0
    order = top_k(final, min(k, rated.size), descending=True)
    ids = rows.column("sample_id").to_pylist()
    members = ctx.write_members([ids[rated[i]] for i in order], final[order].tolist())
    stats = {"pool": rows.num_rows, "rated": int(rated.size), "budget": k, "selected": int(order.size)}
    return StageOutput(members, rows_in=rows.num_rows, stats=stats, metadata=dict(stats))


LIFT_TOP = register_kind(
    StageKind(
        kind="lift_top",
        role="selection",
        spec=LiftTopSpec,
        run=run_lift_top,
        version="1",
        summary="LIFT: top N by 0.9 * rubric score + 0.1 * length score.",
        tags=("python", "numpy"),
    )
)
