"""Reward scorers shared by `reward_scores` and `mods` (MoDS, Du et al. 2023): the question/response
pairs of a sample's judged turns, and the scorer a materialised `reward_scores` stage used."""

from __future__ import annotations

from typing import Any

import numpy as np

from curation_assets.llm.conversation import JudgedTurn, TurnChoice, judged_turns
from curation_assets.models.device import compute_device
from curation_assets.models.embedding_heads import EmbeddingHead
from curation_assets.models.embeddings import SentenceEmbedder
from curation_assets.stages.core.causal_lm import run_batches_with_oom_backoff
from curation_assets.stages.core.context import StageContext
from curation_assets.stages.core.trained_scorers import (
    stored_scorers,
)

UNCLIPPED = 10**9


def question_of(turn: JudgedTurn) -> str:
    """MoDS: the instruction, plus a newline and the input when there is one."""
    return turn.instruction if not turn.input else f"{turn.instruction}\n{turn.input}"


def reward_turns(
    row: dict[str, Any], which: TurnChoice, context_chars: int, field_chars: int = UNCLIPPED
) -> list[tuple[str, str]]:
    turns = judged_turns(
        row["messages"],
        row["instruction"],
        row["input"] or "",
        row["output"] or "",
        which=which,
        field_chars=field_chars,
        context_chars=context_chars,
    )
    return [(question_of(t), t.response) for t in turns]


class ModelRewards:
    def __init__(self, spec: Any, stage: str) -> None:
        from curation_assets.models.reward_model import RewardModelLoadError, load_reward_model

        assert spec.model is not None
        try:
            self.model, self.tokenizer = load_reward_model(spec.model)
        except RewardModelLoadError as err:
            raise ValueError(f"{stage}: `model`: {err}") from err
        self.spec = spec

    def __call__(self, pairs: list[tuple[str, str]], stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from curation_assets.models.reward_model import reward_scores

        scores = np.full(len(pairs), np.nan)
        truncated = np.zeros(len(pairs), dtype=bool)
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))

        def run(batch: list[int]) -> None:
            with torch.inference_mode():
                result = reward_scores(
                    self.model,
                    self.tokenizer,
                    [pairs[i][0] for i in batch],
                    [pairs[i][1] for i in batch],
                    max_length=self.spec.max_length,
                    label_index=self.spec.label_index,
                    device=compute_device().name,
                )
            scores[batch] = result.scores.numpy()
            truncated[batch] = result.truncated

        if pairs:
            run_batches_with_oom_backoff(run, order, self.spec.batch_size, stats)
        return scores, truncated


class HeadRewards:
    def __init__(self, head: EmbeddingHead, batch_size: int) -> None:
        self.head, self.embedder, self.batch_size = head, SentenceEmbedder(head.embedding_model), batch_size

    def __call__(self, pairs: list[tuple[str, str]], stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return self.head.predict(self.embedder, pairs, self.batch_size)


def stored_reward_scorer(ctx: StageContext, stage: str) -> Any:
    """The scorer a materialised `reward_scores` stage used (its HF model, or its trained head at
    its current config), as a callable (pairs, stats) -> (scores, truncated): MoDS scores
    generated responses with it so they compare with the stage's stored rewards."""
    spec: Any = ctx.stage_specs.get(stage)  # a reward_scores spec
    if getattr(spec, "kind", None) != "reward_scores":
        raise ValueError(f"{ctx.stage}: {stage!r} is not a reward_scores stage of this pipeline")
    if spec.model is not None:
        return ModelRewards(spec, stage)
    head = stored_scorers(ctx, stage, ctx.stage_hashes[stage]).get("reward")
    if head is None:
        raise ValueError(
            f"{ctx.stage}: the reward stage {stage!r} has no trained head at its current config; materialise it first"
        )
    return HeadRewards(EmbeddingHead.load(head.folder(stage)), spec.batch_size)
