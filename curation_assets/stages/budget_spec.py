"""The budget keys shared by selections: `budget` (a count) or `fraction` (of the pool)."""

from __future__ import annotations

from pydantic import Field, model_validator

from curation_assets.methods.budget import resolve_budget
from curation_assets.stages.registry import StageSpec


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
