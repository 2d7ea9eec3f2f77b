"""Stage `grand` (Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data Diet"): the norm of each
sample's loss gradient w.r.t. fresh LoRA parameters after `train_steps` steps, averaged over `runs`
independent runs (core/early_training.py)."""

from __future__ import annotations

from typing import Literal

from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.early_training import EarlyTrainingSpec, early_training_schema, score_early_training
from curation_assets.stages.core.registry import StageKind, register_kind


class GrandSpec(EarlyTrainingSpec):
    """GraNd: per-sample LoRA-gradient norm after a few LoRA steps, averaged over runs."""

    kind: Literal["grand"]


def run_grand(spec: GrandSpec, ctx: StageContext) -> StageOutput:
    return score_early_training(spec, ctx, "grand_scores", "grand")


GRAND = register_kind(
    StageKind(
        kind="grand",
        role="stage",
        spec=GrandSpec,
        run=run_grand,
        version="1",
        summary="GraNd: per-sample LoRA gradient norm after a few steps, averaged over runs (Paul et al. 2021).",
        table="grand_scores",
        schema_file="schema/stages/early_training.sql",
        rows_schema=early_training_schema("grand"),
        column_lineage={"grand": ("messages",), "grand_std": ("messages",), "runs": ()},
        tags=("python", "torch", "peft"),
    )
)
