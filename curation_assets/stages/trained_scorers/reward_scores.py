"""Stage `reward_scores`: a reward model's score of each (instruction + input, response), the
quality step of MoDS (Du et al. 2023), whose published model is OpenAssistant's
reward-model-deberta-v3-large-v2 (score = logits[0]; MoDS keeps samples scoring > 0).

Two ways to get the scores:
- `model`: any Hugging Face AutoModelForSequenceClassification by name or local folder,
  batched (padding, one forward per batch), pairs cut longest-first at `max_length`.
- `judge`: no reward model ships offline, so a ridge head on sentence embeddings of
  [question; response] is fitted to an `alpagasus` stage's 0-5 judge scores (per judged
  turn, the texts the judge saw), with a seeded held-out split of samples and Spearman
  reported; trained once per config and recorded in `trained_scorers` like the DEITA scorers.

Question = instruction, plus "\n" + input when there is one (MoDS); each assistant turn of a
conversation is scored with the user turn before it as the instruction and the earlier
conversation as the input (llm/conversation.py), and the sample's reward is the mean over
turns. A non-finite output is a failure (NULL + reason), never a default value.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curation_assets.llm.conversation import TurnChoice
from curation_assets.methods.heldout import heldout_groups
from curation_assets.methods.ridge import DEFAULT_ALPHAS
from curation_assets.models.device import compute_device
from curation_assets.models.embedding_heads import EmbeddingHead
from curation_assets.models.embeddings import PACKAGED_MINILM, SentenceEmbedder
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.registry import StageKind, StageSpec, register_kind
from curation_assets.stages.core.rewards import HeadRewards, ModelRewards, reward_turns
from curation_assets.stages.core.trained_scorers import (
    RidgeAlphas,
    TrainedScorer,
    as_records,
    stored_scorers,
    train_embedding_head,
    write_scored_chunks,
    write_trained_scorers,
)

REWARD_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("reward", pa.float64()),
        ("min_reward", pa.float64()),
        ("turn_rewards", pa.list_(pa.float64())),
        ("n_turns", pa.int32()),
        ("n_failed", pa.int32()),
        ("status", pa.string()),
        ("failure", pa.string()),
        ("truncated", pa.bool_()),
    ]
)
MODEL_KEYS = ("max_length", "label_index")
HEAD_KEYS = ("embedding_model", "alphas", "heldout_fraction", "seed")


class RewardScoresSpec(StageSpec):
    """Reward-model score of each response (MoDS quality)."""

    kind: Literal["reward_scores"]
    model: str | None = Field(
        None,
        description=(
            "A Hugging Face sequence-classification reward model, by name or local folder (published MoDS: "
            "OpenAssistant/reward-model-deberta-v3-large-v2)."
        ),
    )
    judge: str | None = Field(
        None,
        description=(
            "Instead of `model`: an `alpagasus` stage whose judge scores a reward head is fitted to (offline)."
        ),
    )
    max_length: int = Field(512, gt=8, description="`model`: tokens per (question, response) pair.")
    label_index: int = Field(0, ge=0, description="`model`: which output logit is the reward (published: 0).")
    embedding_model: str = Field(PACKAGED_MINILM, description="`judge`: sentence-transformers model of the head.")
    alphas: RidgeAlphas = Field(
        list(DEFAULT_ALPHAS),
        min_length=1,
        description=("`judge`: ridge penalties tried (lowest leave-one-out error wins)."),
    )
    heldout_fraction: float = Field(0.2, ge=0, lt=1, description="`judge`: share of judged samples held out.")
    seed: int = Field(0, description="`judge`: seed of the held-out split.")
    turns: TurnChoice = Field("all", description="Which assistant turns of a conversation are scored.")
    context_chars: int = Field(2000, ge=1, description="Earlier turns given with a later turn (its last N chars).")
    batch_size: int = Field(16, gt=0, description="Pairs per forward pass (halved on out-of-memory).")

    @model_validator(mode="after")
    def _one_source(self) -> RewardScoresSpec:
        if (self.model is None) == (self.judge is None):
            raise ValueError(
                "give exactly one of `model` (a Hugging Face reward model) or `judge` (an alpagasus "
                "stage to fit a reward head to)"
            )
        wrong = [k for k in (HEAD_KEYS if self.model else MODEL_KEYS) if k in self.model_fields_set]
        if wrong:
            owner = "`judge`" if self.model else "`model`"
            raise ValueError(f"{', '.join(f'`{k}`' for k in wrong)} only apply with {owner}")
        return self

    STAGE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"judge": ("alpagasus",)}
    UPSTREAM_KEYS: ClassVar[tuple[str, ...]] = ("judge",)

    UNHASHED: ClassVar[frozenset[str]] = frozenset({"batch_size"})  # does not change results


def train_judge_head(spec: RewardScoresSpec, ctx: StageContext, stats: dict[str, Any]) -> TrainedScorer:
    """Fit the reward head to the judge's per-turn scores, on the texts the judge was shown."""
    assert spec.judge is not None
    judge = ctx.stage_specs.get(spec.judge)
    if judge is None:
        raise ValueError(f"{ctx.stage}: {spec.judge!r} is not a stage of this pipeline")
    judged = ctx.stage_rows(spec.judge, ["turn_scores"]).to_pylist()
    texts = {r["sample_id"]: r for r in ctx.active_samples(["instruction", "input", "output", "messages"]).to_pylist()}
    rows: list[tuple[str, str]] = []
    labels: list[float] = []
    samples: list[str] = []
    for record in judged:
        sample = texts.get(record["sample_id"])
        if sample is None or not record["turn_scores"]:
            continue
        pairs = reward_turns(sample, judge.turns, judge.context_chars, judge.field_chars)
        for pair, value in zip(pairs, record["turn_scores"]):
            if value is not None:
                rows.append(pair)
                labels.append(float(value))
                samples.append(record["sample_id"])
    if len(rows) < 3:
        raise ValueError(
            f"{ctx.stage}: the alpagasus stage {spec.judge!r} has {len(rows)} scored turns; fitting "
            "a reward head needs at least 3"
        )
    held = heldout_groups(samples, spec.heldout_fraction, spec.seed)
    heldout = np.array([s in held for s in samples])
    scorer = train_embedding_head(
        "reward",
        rows,
        np.array(labels),
        heldout,
        embedder=SentenceEmbedder(spec.embedding_model),
        embedding_model=spec.embedding_model,
        alphas=spec.alphas,
        batch_size=spec.batch_size,
        folder=ctx.artifacts_dir / "reward",
    )
    stats.update(
        {"trained": True, "judged_samples": len(set(samples)), "heldout_samples": len(held), **scorer.summary()}
    )
    ctx.log.info(
        f"{ctx.stage}: reward head on {scorer.n_train} judged turns, held-out Spearman "
        f"{scorer.heldout_spearman} over {scorer.n_heldout}"
    )
    return scorer


def per_sample(
    sample_ids: list[str], counts: list[int], scores: np.ndarray, truncated: np.ndarray
) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {name: [] for name in REWARD_SCHEMA.names}
    start = 0
    for sid, n in zip(sample_ids, counts):
        values = [None if np.isnan(v) else float(v) for v in scores[start : start + n]]
        scored = [v for v in values if v is not None]
        failed = n - len(scored)
        out["sample_id"].append(sid)
        out["reward"].append(float(np.mean(scored)) if scored else None)
        out["min_reward"].append(min(scored) if scored else None)
        out["turn_rewards"].append(values)
        out["n_turns"].append(n)
        out["n_failed"].append(failed)
        out["status"].append("ok" if failed == 0 else "failed" if failed == n else "partial")
        out["failure"].append("reward not finite" if failed else None)
        out["truncated"].append(bool(truncated[start : start + n].any()))
        start += n
    return out


def run_reward_scores(spec: RewardScoresSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("reward_scores", ["instruction", "input", "output", "messages"])
    stats: dict[str, Any] = {
        "pending": count,
        "device": compute_device().describe(),
        "reward_source": spec.model or f"head fitted to {spec.judge}",
    }
    trained: list[TrainedScorer] = []
    writer = ctx.rows_writer(REWARD_SCHEMA)
    scorer: Any = None
    if spec.judge is not None:
        existing = stored_scorers(ctx, ctx.stage, ctx.config_hash).get("reward")
        if existing is None:
            existing = train_judge_head(spec, ctx, stats)
            trained.append(existing)
        else:
            stats.update({"trained": False, **existing.summary()})
        if count:
            scorer = HeadRewards(EmbeddingHead.load(existing.folder(ctx.stage)), spec.batch_size)
    elif count:
        scorer = ModelRewards(spec, ctx.stage)
    if count:

        def score(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
            turns = [reward_turns(r, spec.turns, spec.context_chars) for r in rows]
            flat = [pair for sample_turns in turns for pair in sample_turns]
            scores, truncated = scorer(flat, stats)
            return per_sample([r["sample_id"] for r in rows], [len(t) for t in turns], scores, truncated)

        write_scored_chunks(ctx, pending, count, writer, REWARD_SCHEMA, score, stats, desc=f"rewarding {count} samples")
    writer.close()
    return StageOutput(
        writer.path, rows_in=count, stats=stats, metadata=dict(stats), extra={"trained_scorers": as_records(trained)}
    )


REWARD_SCORES = register_kind(
    StageKind(
        kind="reward_scores",
        role="stage",
        spec=RewardScoresSpec,
        run=run_reward_scores,
        version="1",
        summary="Reward-model score of each (instruction + input, response) (MoDS quality): a Hugging Face reward "
        "model, or a head fitted to an AlpaGasus judge.",
        table="reward_scores",
        schema_file="schema/stages/reward_scores.sql",
        rows_schema=REWARD_SCHEMA,
        column_lineage=dict.fromkeys(
            ("reward", "min_reward", "turn_rewards", "n_turns", "n_failed", "status", "failure", "truncated"),
            ("instruction", "input", "output", "messages"),
        ),
        tags=("python", "torch", "transformers"),
        write_extra=write_trained_scorers,
    )
)
