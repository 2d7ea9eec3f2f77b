"""Stage `el2n` (Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data Diet"): mean response-token
||softmax - onehot||_2 after `train_steps` LoRA steps, averaged over `runs` independent runs
(core/early_training.py)."""

from __future__ import annotations

from typing import Literal

from curation_assets.stages.core.early_training import EarlyTrainingSpec, early_training_kind
from curation_assets.stages.core.registry import register_kind


class El2nSpec(EarlyTrainingSpec):
    """EL2N after a few LoRA steps, averaged over runs."""

    kind: Literal["el2n"]


EL2N = register_kind(
    early_training_kind(
        "el2n",
        El2nSpec,
        version="1",
        summary="EL2N after a few LoRA steps, averaged over runs (Data Diet, Paul et al. 2021).",
    )
)
