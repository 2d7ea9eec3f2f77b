"""Stage `deita_scores`: DEITA complexity and quality of every sample and its evol score
(Liu et al. 2024): complexity scored on the instruction, quality on (instruction, response),
score = Σ over turns of complexity_t × quality_t.

The scorers are either those of a `deita_scorer_train` stage (`scorer`), or published DEITA
scorers, causal LMs given by Hugging Face name or local path (`complexity_model`,
`quality_model`, e.g. hkust-nlp/deita-complexity-scorer), read the published way: the
expectation over the softmax of the digit tokens "1".."6" at the first generated position.

Turns: a single-turn sample is (instruction + input, output); each assistant turn of a
conversation is scored with the user turn before it (llm/conversation.py's rule), on its own
as DEITA's score pipeline does. A turn whose score is not finite is a failure: its value is
NULL, the reason is stored, and the sample's `score` is NULL; nothing gets a default value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curation_assets.llm.conversation import judged_turns
from curation_assets.methods.deita_scoring import evol_score
from curation_assets.models.causal_lm import ModelLoadError, fresh_causal_lm, load_causal_lm
from curation_assets.models.device import compute_device
from curation_assets.models.digit_scorer import (
    COMPLEXITY_TEMPLATE,
    QUALITY_TEMPLATE,
    TEMPLATE_FIELDS,
    DigitTokenError,
    check_template,
    digit_token_ids,
    encode_prompt,
    load_scorer_meta,
)
from curation_assets.models.embedding_heads import EmbeddingHead
from curation_assets.models.embeddings import SentenceEmbedder
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.registry import StageKind, StageSpec, register_kind
from curation_assets.stages.core.trained_scorers import score_digit_prompts, stored_scorers, write_scored_chunks

UNCLIPPED = 10**9
DEITA_SCORES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("complexity", pa.float64()),
        ("quality", pa.float64()),
        ("score", pa.float64()),
        ("turn_complexity", pa.list_(pa.float64())),
        ("turn_quality", pa.list_(pa.float64())),
        ("n_turns", pa.int32()),
        ("n_failed", pa.int32()),
        ("status", pa.string()),
        ("failure", pa.string()),
        ("truncated", pa.bool_()),
    ]
)


class DeitaScoresSpec(StageSpec):
    """DEITA complexity x quality per sample, from trained or published scorers."""

    kind: Literal["deita_scores"]
    scorer: str | None = Field(None, description="A `deita_scorer_train` stage whose scorers are used.")
    complexity_model: str | None = Field(
        None,
        description=(
            "A published complexity scorer instead (causal LM: Hugging Face name or local folder, e.g. "
            "hkust-nlp/deita-complexity-scorer)."
        ),
    )
    quality_model: str | None = Field(
        None, description=("A published quality scorer (e.g. hkust-nlp/deita-quality-scorer); with `complexity_model`.")
    )
    complexity_template: str = Field(
        COMPLEXITY_TEMPLATE,
        description=("Published scorers: the complexity prompt, with {instruction} (DEITA's by default)."),
    )
    quality_template: str = Field(
        QUALITY_TEMPLATE,
        description=("Published scorers: the quality prompt, with {instruction} then {output} (DEITA's by default)."),
    )
    max_length: int = Field(
        2048,
        gt=16,
        description=("Causal-LM scorers: tokens per prompt; longer sample text is cut (the prompt's cue is kept)."),
    )
    batch_size: int = Field(8, gt=0, description="Prompts per forward pass (halved on out-of-memory).")

    @model_validator(mode="after")
    def _one_scorer(self) -> DeitaScoresSpec:
        published = (self.complexity_model, self.quality_model)
        if self.scorer is not None and any(published):
            raise ValueError(
                "give either `scorer` (a deita_scorer_train stage) or `complexity_model` + "
                "`quality_model` (published scorers), not both"
            )
        if self.scorer is None and not all(published):
            raise ValueError(
                "give `scorer` (a deita_scorer_train stage), or both `complexity_model` and "
                "`quality_model` (published DEITA scorers)"
            )
        templates = {"complexity_template", "quality_template"} & self.model_fields_set
        if self.scorer is not None and templates:
            raise ValueError(
                f"{', '.join(sorted(templates))}: a trained scorer uses the templates it was "
                "trained with (set them on the deita_scorer_train stage)"
            )
        check_template(self.complexity_template, "complexity")
        check_template(self.quality_template, "quality")
        return self

    STAGE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"scorer": ("deita_scorer_train",)}
    UPSTREAM_KEYS: ClassVar[tuple[str, ...]] = ("scorer",)

    UNHASHED: ClassVar[frozenset[str]] = frozenset({"batch_size"})  # does not change results


class TurnScorer(Protocol):
    def __call__(self, rows: Sequence[tuple[str, ...]], stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Scores of rows of texts (NaN = failed) and whether each row's text was cut."""
        ...


class HeadScorer:
    def __init__(self, head: EmbeddingHead, embedder: SentenceEmbedder, batch_size: int) -> None:
        self.head, self.embedder, self.batch_size = head, embedder, batch_size

    def __call__(self, rows: Sequence[tuple[str, ...]], stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return self.head.predict(self.embedder, rows, self.batch_size)


class DigitScorer:
    """A causal LM read by its digit-token expectation; `adapter` picks a peft adapter first."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        dimension: str,
        template: str,
        max_length: int,
        batch_size: int,
        model_name: str,
        adapter: str | None = None,
    ) -> None:
        self.model, self.tokenizer, self.dimension, self.template = model, tokenizer, dimension, template
        self.max_length, self.batch_size, self.adapter = max_length, batch_size, adapter
        self.digit_ids = digit_token_ids(tokenizer, model_name)

    def __call__(self, rows: Sequence[tuple[str, ...]], stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if self.adapter is not None:
            self.model.set_adapter(self.adapter)
        fields = TEMPLATE_FIELDS[self.dimension]
        prompts = [
            encode_prompt(self.tokenizer, self.template, self.max_length, **dict(zip(fields, row))) for row in rows
        ]
        scores = score_digit_prompts(
            self.model,
            prompts,
            self.digit_ids,
            self.tokenizer.pad_token_id,
            batch_size=self.batch_size,
            device=compute_device().name,
            stats=stats,
        )
        return scores, np.array([p.truncated for p in prompts], dtype=bool)


def published_scorers(spec: DeitaScoresSpec, stage: str) -> tuple[TurnScorer, TurnScorer]:
    scorers = []
    for dimension, key, name, template in (
        ("complexity", "complexity_model", spec.complexity_model, spec.complexity_template),
        ("quality", "quality_model", spec.quality_model, spec.quality_template),
    ):
        assert name is not None
        try:
            model, tokenizer = load_causal_lm(name)
            scorers.append(
                DigitScorer(
                    model,
                    tokenizer,
                    dimension=dimension,
                    template=template,
                    max_length=spec.max_length,
                    batch_size=spec.batch_size,
                    model_name=name,
                )
            )
        except (ModelLoadError, DigitTokenError) as err:
            raise ValueError(f"{stage}: `{key}`: {err}") from err
    return scorers[0], scorers[1]


def trained_scorers(spec: DeitaScoresSpec, ctx: StageContext) -> tuple[TurnScorer, TurnScorer]:
    assert spec.scorer is not None
    records = stored_scorers(ctx, spec.scorer, ctx.stage_hashes[spec.scorer])
    missing = [d for d in ("complexity", "quality") if d not in records]
    if missing:
        raise ValueError(
            f"{ctx.stage}: the deita_scorer_train stage {spec.scorer!r} has no {' or '.join(missing)} "
            "scorer for its current config: materialise it first"
        )
    owner = f"{ctx.stage} (scorer {spec.scorer!r})"
    folders = {d: records[d].folder(owner) for d in ("complexity", "quality")}
    if records["complexity"].backend == "embedding_head":
        heads = {d: EmbeddingHead.load(f) for d, f in folders.items()}
        embedder = SentenceEmbedder(heads["complexity"].embedding_model)
        return (
            HeadScorer(heads["complexity"], embedder, spec.batch_size),
            HeadScorer(heads["quality"], embedder, spec.batch_size),
        )
    from peft import PeftModel

    meta = {d: load_scorer_meta(f) for d, f in folders.items()}
    base, tokenizer = fresh_causal_lm(meta["complexity"]["base_model"])
    model = PeftModel.from_pretrained(base, str(folders["complexity"]), adapter_name="complexity")
    model.load_adapter(str(folders["quality"]), adapter_name="quality")
    model.to(compute_device().name).eval()
    return tuple(
        DigitScorer(
            model,
            tokenizer,
            dimension=d,
            template=meta[d]["template"],  # type: ignore[return-value]
            max_length=spec.max_length,
            batch_size=spec.batch_size,
            model_name=meta[d]["base_model"],
            adapter=d,
        )
        for d in ("complexity", "quality")
    )


def deita_turns(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(instruction, response) per scored turn: a single-turn sample's instruction carries its
    input; a conversation's turns are its user messages alone (as DEITA scores them)."""
    turns = judged_turns(
        row["messages"],
        row["instruction"],
        row["input"] or "",
        row["output"] or "",
        field_chars=UNCLIPPED,
        context_chars=UNCLIPPED,
    )
    single = sum(m["role"] == "assistant" for m in row["messages"]) <= 1
    return [
        ((t.instruction + (f"\n\n{t.input}" if t.input else "")) if single else t.instruction, t.response)
        for t in turns
    ]


def sample_rows(
    sample_ids: list[str],
    turns: list[list[tuple[str, str]]],
    complexity: np.ndarray,
    quality: np.ndarray,
    truncated: np.ndarray,
) -> dict[str, list[Any]]:
    """Per-sample columns from per-turn scores (flat over the chunk's turns, in order)."""
    out: dict[str, list[Any]] = {name: [] for name in DEITA_SCORES_SCHEMA.names}
    start = 0
    for sid, sample_turns in zip(sample_ids, turns):
        end = start + len(sample_turns)
        c = [None if np.isnan(v) else float(v) for v in complexity[start:end]]
        q = [None if np.isnan(v) else float(v) for v in quality[start:end]]
        reasons = sorted(
            {
                f"{name}: scorer output not finite"
                for name, values in (("complexity", c), ("quality", q))
                if any(v is None for v in values)
            }
        )
        failed = sum(a is None or b is None for a, b in zip(c, q))
        scored_c, scored_q = [v for v in c if v is not None], [v for v in q if v is not None]
        out["sample_id"].append(sid)
        out["complexity"].append(float(np.mean(scored_c)) if scored_c else None)
        out["quality"].append(float(np.mean(scored_q)) if scored_q else None)
        out["score"].append(evol_score(c, q))
        out["turn_complexity"].append(c)
        out["turn_quality"].append(q)
        out["n_turns"].append(len(sample_turns))
        out["n_failed"].append(failed)
        out["status"].append("ok" if failed == 0 else "failed" if failed == len(sample_turns) else "partial")
        out["failure"].append("; ".join(reasons) or None)
        out["truncated"].append(bool(truncated[start:end].any()))
        start = end
    return out


def run_deita_scores(spec: DeitaScoresSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("deita_scores", ["instruction", "input", "output", "messages"])
    stats: dict[str, Any] = {
        "pending": count,
        "device": compute_device().describe(),
        "scorer": spec.scorer or f"{spec.complexity_model} / {spec.quality_model}",
    }
    writer = ctx.rows_writer(DEITA_SCORES_SCHEMA)
    if count:
        complexity_scorer, quality_scorer = (
            trained_scorers(spec, ctx) if spec.scorer else published_scorers(spec, ctx.stage)
        )

        def score(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
            turns = [deita_turns(r) for r in rows]
            flat = [t for sample_turns in turns for t in sample_turns]
            complexity, cut_c = complexity_scorer([(i,) for i, _ in flat], stats)
            quality, cut_q = quality_scorer(flat, stats)
            return sample_rows([r["sample_id"] for r in rows], turns, complexity, quality, cut_c | cut_q)

        write_scored_chunks(
            ctx, pending, count, writer, DEITA_SCORES_SCHEMA, score, stats, desc=f"scoring {count} samples"
        )
    writer.close()
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=dict(stats))


DEITA_SCORES = register_kind(
    StageKind(
        kind="deita_scores",
        role="stage",
        spec=DeitaScoresSpec,
        run=run_deita_scores,
        version="1",
        summary="DEITA complexity, quality and complexity x quality (summed over turns) from trained or published "
        "scorers.",
        table="deita_scores",
        schema_file="schema/stages/deita_scores.sql",
        rows_schema=DEITA_SCORES_SCHEMA,
        column_lineage={
            "complexity": ("instruction", "input", "messages"),
            "quality": ("instruction", "input", "output", "messages"),
            "score": ("instruction", "input", "output", "messages"),
            "turn_complexity": ("messages",),
            "turn_quality": ("messages",),
            "n_turns": ("messages",),
            "n_failed": ("messages",),
            "status": ("messages",),
            "failure": ("messages",),
            "truncated": ("instruction", "input", "output", "messages"),
        },
        tags=("python", "torch"),
        shardable=True,
    )
)
