"""Stage `alpagasus` (AlpaGasus, Chen et al. 2024).

An LLM rates the accuracy of each response to its instruction + input on 0-5, score on the
first line (temperature 0, max_tokens 256). Multi-turn: every assistant turn is rated
(see llm/conversation.py) and the sample's score is the mean over turns (min kept too).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation_assets.llm.client import ChatRequest
from curation_assets.llm.conversation import TurnChoice
from curation_assets.llm.parsing import ALPAGASUS_SCHEMA as ALPAGASUS_ANSWER_SCHEMA
from curation_assets.llm.parsing import parse_alpagasus_score
from curation_assets.llm.prompts import render
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.llm_stage import TURN_COLUMNS, TURN_FIELDS, Judged, LLMStageSpec, run_turn_judge
from curation_assets.stages.core.registry import StageKind, register_kind

ALPAGASUS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("score", pa.float64()),
        ("min_score", pa.float64()),
        ("turn_scores", pa.list_(pa.float64())),
        *TURN_FIELDS,
    ]
)


class AlpagasusSpec(LLMStageSpec):
    """LLM-rated accuracy of each response, 0-5 (AlpaGasus)."""

    PROMPTS: ClassVar[tuple[str, ...]] = ("alpagasus_system", "alpagasus_user")
    BATCH_MODE: ClassVar[bool] = True
    kind: Literal["alpagasus"]
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (published: 0).")
    max_tokens: int = Field(256, gt=0, description="Answer length limit (published: 256).")
    turns: TurnChoice = Field("all", description="Which assistant turns of a conversation are rated.")


def alpagasus_requests(spec: AlpagasusSpec, sample_id: str, turns: list[Any]) -> list[ChatRequest]:
    system, user = spec.prompt("alpagasus_system"), spec.prompt("alpagasus_user")
    params = {
        "temperature": spec.temperature,
        "max_tokens": spec.max_tokens,
        **spec.response_format(ALPAGASUS_ANSWER_SCHEMA),
    }
    return [
        ChatRequest(
            (
                {"role": "system", "content": system},
                {
                    "role": "user",
                    "content": render(user, instruction=t.instruction, input=t.input, response=t.response),
                },
            ),
            params,
            sample_id=sample_id,
        )
        for t in turns
    ]


def run_alpagasus(spec: AlpagasusSpec, ctx: StageContext) -> StageOutput:
    def scores(row: dict[str, Any], judged: list[Judged[float]]) -> dict[str, Any]:
        values = [j.value for j in judged]
        parsed = [v for v in values if v is not None]
        return {
            "score": float(np.mean(parsed)) if parsed else None,
            "min_score": min(parsed) if parsed else None,
            "turn_scores": values,
        }

    return run_turn_judge(
        spec,
        ctx,
        table="alpagasus",
        schema=ALPAGASUS_SCHEMA,
        request=lambda sid, turn: alpagasus_requests(spec, sid, [turn])[0],
        parse=parse_alpagasus_score,
        sample_columns=scores,
        verb="judging",
    )


ALPAGASUS = register_kind(
    StageKind(
        kind="alpagasus",
        role="stage",
        shardable=True,
        spec=AlpagasusSpec,
        run=run_alpagasus,
        version="1",
        summary="AlpaGasus: an LLM rates each response's accuracy 0-5 (OpenAI-compatible endpoint, cached).",
        table="alpagasus",
        schema_file="schema/stages/alpagasus.sql",
        rows_schema=ALPAGASUS_SCHEMA,
        column_lineage={
            "score": ("instruction", "input", "output", "messages"),
            "min_score": ("messages",),
            "turn_scores": ("messages",),
            **dict.fromkeys(TURN_COLUMNS, ("messages",)),
        },
        tags=("python", "openai"),
    )
)
