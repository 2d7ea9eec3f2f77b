"""A score read from another stage's column (`{stage, column}` in YAML) and its alignment to
a list of sample ids. `StageColumnInput` (budget.py) is the same idea as top-level keys."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation_assets.arrow_compute import pc
from curation_assets.specs import SpecModel
from curation_assets.stages.core.registry import StageKind


class ScoreColumn(SpecModel):
    """One numeric column of one stage."""

    stage: str = Field(description="Name of the stage.")
    column: str = Field(description="Numeric column of that stage's table.")

    @property
    def label(self) -> str:
        return f"{self.stage}.{self.column}"

    def problems(self, stage_kinds: Mapping[str, StageKind], selection_names: set[str]) -> list[str]:
        return [message for _, message in score_column_problems(self.stage, self.column, stage_kinds, selection_names)]


def score_column_problems(
    stage: str, column: str, stage_kinds: Mapping[str, StageKind], selection_names: set[str]
) -> list[tuple[str, str]]:
    """("stage" or "column", message) when `stage` is a selection or its table has no `column`."""
    kind = stage_kinds.get(stage)
    if kind is None and stage in selection_names:
        return [("stage", f"{stage!r} must be a stage (selections have no score columns)")]
    if kind is not None and column not in kind.column_lineage:
        return [
            (
                "column",
                f"stage {stage!r} ({kind.kind}) has no column {column!r}; columns: {', '.join(kind.column_lineage)}",
            )
        ]
    return []


def aligned_scores(sample_ids: list[str], rows: pa.Table, column: str) -> np.ndarray:
    """`column` of `rows` (sample_id + column) aligned to `sample_ids`: NaN where a sample has no
    row or a NULL value."""
    position = pc.index_in(pa.array(sample_ids, pa.string()), value_set=rows.column("sample_id"))
    position = position.to_numpy(zero_copy_only=False).astype(np.float64)
    values = pc.cast(rows.column(column), pa.float64()).to_numpy(zero_copy_only=False)
    scores = np.full(len(sample_ids), np.nan)
    found = ~np.isnan(position)
    scores[found] = values[position[found].astype(np.int64)]
    return scores
