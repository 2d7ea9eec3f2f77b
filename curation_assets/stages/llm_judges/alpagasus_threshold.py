"""Selection `alpagasus_threshold` (AlpaGasus, Chen et al. 2024): keep samples whose `alpagasus`
score is at least `threshold` (published: 4.5), best first."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.registry import StageKind, StageSpec, register_kind, stage_reference_problems


class AlpagasusThresholdSpec(StageSpec):
    """Keep samples whose AlpaGasus score is at least `threshold` (published: 4.5)."""

    kind: Literal["alpagasus_threshold"]
    stage: str = Field(description="The `alpagasus` stage whose scores are used.")
    threshold: float = Field(4.5, ge=0, le=5, description="Minimum score kept.")

    def references(self) -> dict[str, str]:
        return {**super().references(), "stage": self.stage}

    def score_sources(self) -> list[tuple[str, str]]:
        return [(self.stage, "score")]

    def check_references(self, stage_kinds: Any, selection_names: set[str]) -> list[tuple[str, str]]:
        return [
            *super().check_references(stage_kinds, selection_names),
            *stage_reference_problems("stage", self.stage, ("alpagasus",), stage_kinds, selection_names),
        ]


def run_alpagasus_threshold(spec: AlpagasusThresholdSpec, ctx: StageContext) -> StageOutput:
    rows = ctx.stage_rows(spec.stage, ["score"])
    scores = rows.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    keep = np.flatnonzero(~np.isnan(scores) & (scores >= spec.threshold))
    order = keep[np.lexsort((keep, -scores[keep]))]  # best first, ties by sample_id order
    ids = rows.column("sample_id").to_pylist()
    members = ctx.write_members([ids[i] for i in order], scores[order].tolist())
    stats = {
        "pool": rows.num_rows,
        "scored": int((~np.isnan(scores)).sum()),
        "selected": int(order.size),
        "threshold": spec.threshold,
    }
    return StageOutput(members, rows_in=rows.num_rows, stats=stats, metadata=dict(stats))


ALPAGASUS_THRESHOLD = register_kind(
    StageKind(
        kind="alpagasus_threshold",
        role="selection",
        spec=AlpagasusThresholdSpec,
        run=run_alpagasus_threshold,
        version="1",
        summary="Samples with AlpaGasus score >= threshold (4.5), best first.",
        tags=("python",),
    )
)
