"""Stage `el2n` (Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data Diet"): mean response-token
||softmax - onehot||_2 after `train_steps` LoRA steps, averaged over `runs` independent runs
(core/early_training.py)."""

from __future__ import annotations

from typing import Literal

from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.early_training import EarlyTrainingSpec, early_training_schema, score_early_training
from curation_assets.stages.core.registry import StageKind, register_kind


class El2nSpec(EarlyTrainingSpec):
    """EL2N after a few LoRA steps, averaged over runs."""

    kind: Literal["el2n"]


def run_el2n(spec: El2nSpec, ctx: StageContext) -> StageOutput:
    return score_early_training(spec, ctx, "el2n_scores", "el2n")


EL2N = register_kind(
    StageKind(
        kind="el2n",
        role="stage",
        spec=El2nSpec,
        run=run_el2n,
        version="1",
        summary="EL2N after a few LoRA steps, averaged over runs (Data Diet, Paul et al. 2021).",
        table="el2n_scores",
        schema_file="schema/stages/early_training.sql",
        rows_schema=early_training_schema("el2n"),
        column_lineage={"el2n": ("messages",), "el2n_std": ("messages",), "runs": ()},
        tags=("python", "torch", "peft"),
    )
)
