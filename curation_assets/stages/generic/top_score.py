"""Selection `top_score`: the best samples by one column of a stage, with optional bounds."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from curation_assets.stages.core.budget import BudgetedSelectionSpec, StageColumnInput
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.conversation_keys import DistinctSpec, choose_top
from curation_assets.stages.core.registry import StageKind, register_kind


class TopScoreSpec(StageColumnInput, BudgetedSelectionSpec, DistinctSpec):
    """Rank by `stage`.`column`; keep rows within [min_score, max_score], then the top budget
    (by default at most one sample per conversation and per first user turn: `distinct`)."""

    kind: Literal["top_score"]
    order: Literal["descending", "ascending"] = Field("descending", description="descending = highest first.")
    min_score: float | None = Field(None, description="Drop samples scoring below this.")
    max_score: float | None = Field(None, description="Drop samples scoring above this.")

    @model_validator(mode="after")
    def _bounds(self) -> TopScoreSpec:
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise ValueError(f"min_score {self.min_score} > max_score {self.max_score}")
        return self


def run_top_score(spec: TopScoreSpec, ctx: StageContext) -> StageOutput:
    rows = ctx.stage_rows(spec.stage, [spec.column])
    scores = rows.column(spec.column).to_numpy(zero_copy_only=False).astype(np.float64)
    keep = ~np.isnan(scores)
    if spec.min_score is not None:
        keep &= scores >= spec.min_score
    if spec.max_score is not None:
        keep &= scores <= spec.max_score
    eligible = np.flatnonzero(keep)
    k = spec.budget_for(rows.num_rows) if eligible.size else 0
    sample_ids = rows.column("sample_id").to_pylist()
    order, distinct = choose_top(
        ctx.store,
        [sample_ids[i] for i in eligible],
        scores[eligible],
        min(k, eligible.size),
        distinct=spec.distinct,
        descending=spec.order == "descending",
    )
    chosen = eligible[order]
    members = ctx.write_members([sample_ids[i] for i in chosen], scores[chosen].tolist())
    stats = {
        "pool": rows.num_rows,
        "eligible": int(eligible.size),
        "budget": k,
        "selected": int(chosen.size),
        **distinct,
    }
    return StageOutput(members, rows_in=rows.num_rows, stats=stats, metadata=dict(stats))


TOP_SCORE = register_kind(
    StageKind(
        kind="top_score",
        role="selection",
        spec=TopScoreSpec,
        run=run_top_score,
        version="2",
        summary="Top samples by a stage's numeric column, with optional min/max bounds.",
        tags=("python", "numpy"),
    )
)
