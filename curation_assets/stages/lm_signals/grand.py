"""Stage `grand` (Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data Diet"): the norm of each
sample's loss gradient w.r.t. fresh LoRA parameters after `train_steps` steps, averaged over `runs`
independent runs (core/early_training.py)."""

from __future__ import annotations

from typing import Literal

from curation_assets.stages.core.early_training import EarlyTrainingSpec, early_training_kind
from curation_assets.stages.core.registry import register_kind


class GrandSpec(EarlyTrainingSpec):
    """GraNd: per-sample LoRA-gradient norm after a few LoRA steps, averaged over runs."""

    kind: Literal["grand"]


GRAND = register_kind(
    early_training_kind(
        "grand",
        GrandSpec,
        version="1",
        summary="GraNd: per-sample LoRA gradient norm after a few steps, averaged over runs (Paul et al. 2021).",
    )
)
