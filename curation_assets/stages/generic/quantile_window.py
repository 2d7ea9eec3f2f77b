"""Selection `quantile_window`: samples whose score lies between two quantiles of a stage column.

The window (1 − offset − size, 1 − offset) of NLU data diets (Attendu & Corbeil 2023):
offset 0 keeps the top `size` share (the hardest by EL2N), a small offset skips the very
top (often noise). Ranked by score, highest first.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from curation_assets.methods.quantile_window import quantile_window
from curation_assets.stages.core.budget import StageColumnInput
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.registry import StageKind, register_kind


class QuantileWindowSpec(StageColumnInput):
    kind: Literal["quantile_window"]
    size: float = Field(0.5, gt=0, le=1, description="Width of the window, as a share of samples.")
    offset: float = Field(0.0, ge=0, lt=1, description="Share of top-scoring samples skipped above the window.")

    @model_validator(mode="after")
    def _fits(self) -> QuantileWindowSpec:
        if self.offset + self.size > 1:
            raise ValueError(f"offset + size must be <= 1, got {self.offset + self.size}")
        return self


def run_quantile_window(spec: QuantileWindowSpec, ctx: StageContext) -> StageOutput:
    rows = ctx.stage_rows(spec.stage, [spec.column])
    scores = rows.column(spec.column).to_numpy(zero_copy_only=False).astype(np.float64)
    chosen = quantile_window(scores, spec.size, spec.offset)
    ids = rows.column("sample_id").to_pylist()
    stats = {"pool": rows.num_rows, "selected": int(chosen.size), "size": spec.size, "offset": spec.offset}
    return StageOutput(
        ctx.write_members([ids[i] for i in chosen], scores[chosen].tolist()),
        rows_in=rows.num_rows,
        stats=stats,
        metadata=stats,
    )


QUANTILE_WINDOW = register_kind(
    StageKind(
        kind="quantile_window",
        role="selection",
        spec=QuantileWindowSpec,
        run=run_quantile_window,
        version="1",
        summary="Samples between two quantiles of a stage's score (NLU data diets window).",
        tags=("python", "numpy"),
    )
)
