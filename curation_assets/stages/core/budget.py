"""Keys shared by selections: a budget (`budget` count or `fraction` of the pool), and a
score taken from one column of a stage (`stage`, `column`)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, model_validator

from curation_assets.methods.budget import resolve_budget
from curation_assets.stages.core.registry import StageKind, StageSpec
from curation_assets.stages.core.score_input import score_column_problems


class BudgetedSelectionSpec(StageSpec):
    budget: int | None = Field(None, gt=0, description="Keep this many samples.")
    fraction: float | None = Field(None, gt=0, le=1, description="Keep this fraction of the pool.")

    @model_validator(mode="after")
    def _one_budget(self) -> BudgetedSelectionSpec:
        if (self.budget is None) == (self.fraction is None):
            raise ValueError("give exactly one of `budget` (a count) or `fraction` (of the pool)")
        return self

    def budget_for(self, pool_size: int) -> int:
        return resolve_budget(pool_size, count=self.budget, fraction=self.fraction)


class StageColumnInput(StageSpec):
    """A selection ranking samples by `stage`.`column` (checked at load time)."""

    stage: str = Field(description="Name of the stage whose column is the score.")
    column: str = Field(description="Numeric column of that stage's table.")

    def references(self) -> dict[str, str]:
        return {**super().references(), "stage": self.stage}

    def score_sources(self) -> list[tuple[str, str]]:
        return [(self.stage, self.column)]

    def check_references(
        self, stage_kinds: Mapping[str, StageKind], selection_names: set[str]
    ) -> list[tuple[str, str]]:
        return [
            *super().check_references(stage_kinds, selection_names),
            *score_column_problems(self.stage, self.column, stage_kinds, selection_names),
        ]
