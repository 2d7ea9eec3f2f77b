"""Stage `lift_quality` (LIFT, Xu et al. 2023): an LLM grades each sample on a 100-point rubric
(clarity 15, difficulty 25, explanation 25, accuracy 35) with few-shot examples; multi-turn
conversations are rated per turn and averaged."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation_assets.llm.client import ChatRequest
from curation_assets.llm.conversation import TurnChoice
from curation_assets.llm.parsing import LIFT_RUBRIC, LIFT_RUBRIC_SCHEMA, parse_lift_rubric
from curation_assets.llm.prompts import render
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.llm_stage import TURN_COLUMNS, TURN_FIELDS, Judged, LLMStageSpec, run_turn_judge
from curation_assets.stages.core.registry import StageKind, register_kind

LIFT_QUALITY_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("llm_score", pa.float64()),
        *[(name, pa.float64()) for name in LIFT_RUBRIC],
        ("response_chars", pa.int64()),
        *TURN_FIELDS,
    ]
)


class LiftQualitySpec(LLMStageSpec):
    """The LIFT 100-point quality rubric, rated by an LLM with few-shot examples."""

    PROMPTS: ClassVar[tuple[str, ...]] = ("lift_quality_system", "lift_quality_user")
    BATCH_MODE: ClassVar[bool] = True
    kind: Literal["lift_quality"]
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(96, gt=0, description="Answer length limit (five short lines).")
    turns: TurnChoice = Field("all", description="Which assistant turns are rated (then averaged).")


def run_lift_quality(spec: LiftQualitySpec, ctx: StageContext) -> StageOutput:
    system, user = spec.prompt("lift_quality_system"), spec.prompt("lift_quality_user")
    params = {
        "temperature": spec.temperature,
        "max_tokens": spec.max_tokens,
        **spec.response_format(LIFT_RUBRIC_SCHEMA),
    }

    def request(sid: str, turn: Any) -> ChatRequest:
        text = turn.instruction + (f"\n{turn.input}" if turn.input else "")
        return ChatRequest(
            (
                {"role": "system", "content": system},
                {"role": "user", "content": render(user, instruction=text, response=turn.response)},
            ),
            params,
            sample_id=sid,
        )

    def rubric(row: dict[str, Any], judged: list[Judged[dict[str, float]]]) -> dict[str, Any]:
        parsed = [j.value for j in judged if j.value is not None]
        return {
            "llm_score": float(np.mean([p["total"] for p in parsed])) if parsed else None,
            **{name: float(np.mean([p[name] for p in parsed])) if parsed else None for name in LIFT_RUBRIC},
            "response_chars": sum(len(m["content"]) for m in row["messages"] if m["role"] == "assistant"),
        }

    return run_turn_judge(
        spec,
        ctx,
        table="lift_quality",
        schema=LIFT_QUALITY_SCHEMA,
        request=request,
        parse=parse_lift_rubric,
        sample_columns=rubric,
        verb="rating",
    )


LIFT_QUALITY = register_kind(
    StageKind(
        kind="lift_quality",
        role="stage",
        shardable=True,
        spec=LiftQualitySpec,
        run=run_lift_quality,
        version="1",
        summary="LIFT quality: an LLM grades each sample on a 100-point rubric (clarity, difficulty, explanation, "
        "accuracy).",
        table="lift_quality",
        schema_file="schema/stages/lift_quality.sql",
        rows_schema=LIFT_QUALITY_SCHEMA,
        column_lineage={
            **dict.fromkeys(("llm_score", *LIFT_RUBRIC, *TURN_COLUMNS), ("instruction", "input", "output", "messages")),
            "response_chars": ("messages",),
        },
        tags=("python", "openai"),
    )
)
