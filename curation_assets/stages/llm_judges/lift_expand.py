"""Stage `lift_expand` (LIFT phase 1, Xu et al. 2023, "Rethinking the Instruction Quality: LIFT is
What You Need"): an LLM acting as a prompt refinement specialist rewrites and expands each
original instruction for `rounds` rounds (temperature 0.5); each round's instruction is answered
by the same endpoint and enters `samples` as a new sample whose parent_id is the previous
round's sample, so lineage back to the original is one join. A child's sample_id is derived from its
text, its parent and its round (`generated_sample_id`): the same text rewritten from two parents is
two samples, each with its own parent (LIFT leaves near-copies to its later diversity step)."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from curation_assets.llm.client import ChatRequest
from curation_assets.llm.conversation import clip
from curation_assets.llm.parsing import clean_generation
from curation_assets.llm.prompts import render
from curation_assets.llm.spend import message_tokens, prompt_tokens
from curation_assets.sources.normalise import generated_sample_id
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.llm_stage import (
    LLMStageSpec,
    ask_and_parse,
    check_spend,
    planned_stats,
    settle_batches,
)
from curation_assets.stages.core.registry import StageKind, register_kind
from curation_assets.store.sql_files import execute_sql_file
from curation_assets.store.writes import utc_now

MESSAGES_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
LIFT_EXPAND_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("round", pa.int32()),
        ("child_id", pa.string()),
        ("status", pa.string()),
        ("instruction", pa.string()),
        ("detail", pa.string()),
    ]
)
GENERATED_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("parent_id", pa.string()),
        ("instruction", pa.string()),
        ("output", pa.string()),
        ("messages", MESSAGES_TYPE),
        ("raw_record", pa.string()),
    ]
)
REWRITE_MARKERS = ("#Rewritten Instruction#", "Rewritten Instruction", "#Instruction#", "Instruction")


class LiftExpandSpec(LLMStageSpec):
    """Rewrite/expand each original instruction for `rounds` rounds and answer it (LIFT phase 1)."""

    PROMPTS: ClassVar[tuple[str, ...]] = ("lift_expand_system", "lift_expand_user")
    BATCH_ROUNDS: ClassVar[bool] = True  # llm.mode: batch sends each round as one Batch job
    kind: Literal["lift_expand"]
    rounds: int = Field(1, ge=1, le=10, description="Rewrites per original; round r rewrites round r-1.")
    temperature: float = Field(0.5, ge=0, le=2, description="Temperature of the rewrites (published: 0.5).")
    max_tokens: int = Field(384, gt=0, description="Length limit of a rewritten instruction.")
    response_temperature: float = Field(0.5, ge=0, le=2, description="Temperature of the answers.")
    response_max_tokens: int = Field(512, gt=0, description="Length limit of an answer.")


def _expand_requests(spec: LiftExpandSpec, items: list[tuple[str, str]]) -> list[ChatRequest]:
    system, user = spec.prompt("lift_expand_system"), spec.prompt("lift_expand_user")
    params = {"temperature": spec.temperature, "max_tokens": spec.max_tokens}
    return [
        ChatRequest(
            (
                {"role": "system", "content": system},
                {"role": "user", "content": render(user, instruction=clip(text, spec.field_chars)[0])},
            ),
            params,
            sample_id=sid,
        )
        for sid, text in items
    ]


def _answer_requests(spec: LiftExpandSpec, items: list[tuple[str, str]]) -> list[ChatRequest]:
    params = {"temperature": spec.response_temperature, "max_tokens": spec.response_max_tokens}
    return [ChatRequest(({"role": "user", "content": text},), params, sample_id=sid) for sid, text in items]


def _original(row: dict[str, Any]) -> str:
    return row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")


def _followups(spec: LiftExpandSpec, first: ChatRequest) -> list[tuple[int, int]]:
    """(prompt tokens, max tokens) of the requests after a round-1 rewrite: its answer, then per later
    round a rewrite of the previous rewrite (at most max_tokens long) and its answer."""
    answer = (message_tokens(spec.max_tokens), spec.response_max_tokens)
    rewrite = (prompt_tokens(first) + spec.max_tokens, spec.max_tokens)
    return [answer] + [rewrite, answer] * (spec.rounds - 1)


def run_lift_expand(spec: LiftExpandSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("lift_expand", ["instruction", "input"])
    client = spec.client(ctx)
    plan = check_spend(  # before anything is sent: round-1 rewrites and what follows them
        spec,
        client,
        pending,
        lambda rows: [_expand_requests(spec, [(r["sample_id"], _original(r))]) for r in rows],
        lambda first: _followups(spec, first),
    )
    statuses: dict[str, int] = {}
    generated_path = ctx.staging_dir / f"{ctx.stage}.generated.parquet"
    made_ids: set[str] = set()  # children written so far: samples.sample_id is unique
    with ctx.rows_writer(LIFT_EXPAND_SCHEMA) as rows, pq.ParquetWriter(generated_path, GENERATED_SCHEMA) as new:
        chunks = iter_parquet_batches(pending, spec.chunk_size)
        for chunk in ctx.progress(chunks, total=-(-count // spec.chunk_size), desc=f"expanding {count} samples"):
            current = {r["sample_id"]: _original(r) for r in chunk.to_pylist()}
            parent = {sid: sid for sid in current}
            out: dict[str, list[Any]] = {name: [] for name in LIFT_EXPAND_SCHEMA.names}
            made: dict[str, list[Any]] = {name: [] for name in GENERATED_SCHEMA.names}

            def record(
                sid: str,
                round_no: int,
                status: str,
                child: str | None,
                instruction: str | None,
                detail: str | None,
                out: dict[str, list[Any]] = out,
            ) -> None:
                for name, value in zip(LIFT_EXPAND_SCHEMA.names, (sid, round_no, child, status, instruction, detail)):
                    out[name].append(value)
                statuses[status] = statuses.get(status, 0) + 1

            for round_no in range(1, spec.rounds + 1):
                alive = list(current)
                rewrites = ask_and_parse(
                    client,
                    _expand_requests(spec, [(s, current[s]) for s in alive]),
                    lambda text: clean_generation(text, REWRITE_MARKERS),
                    spec.parse_retries,
                    spec.retry_temperature,
                )
                rewritten = {}
                for sid, judged in zip(alive, rewrites):
                    if judged.value is None:
                        record(
                            sid,
                            round_no,
                            "request_rejected" if judged.error else "empty_rewrite",
                            None,
                            None,
                            judged.error or judged.answer,
                        )
                    else:
                        rewritten[sid] = judged.value
                answers = ask_and_parse(
                    client,
                    _answer_requests(spec, list(rewritten.items())),
                    lambda text: clean_generation(text),
                    spec.parse_retries,
                    spec.retry_temperature,
                )
                current = {}
                for (sid, instruction), judged in zip(rewritten.items(), answers):
                    if judged.value is None:
                        record(
                            sid,
                            round_no,
                            "request_rejected" if judged.error else "empty_answer",
                            None,
                            instruction,
                            judged.error or judged.answer,
                        )
                        continue
                    messages = [
                        {"role": "user", "content": instruction},
                        {"role": "assistant", "content": judged.value},
                    ]
                    child = generated_sample_id(messages, parent[sid], round_no)
                    lineage = {
                        "generated_by": ctx.stage,
                        "kind": "lift_expand",
                        "round": round_no,
                        "parent_id": parent[sid],
                        "original_id": sid,
                        "model": spec.llm.model,
                    }
                    if child not in made_ids:  # same parent, round and text: one sample (never two rows)
                        made_ids.add(child)
                        for name, value in zip(
                            GENERATED_SCHEMA.names,
                            (child, parent[sid], instruction, judged.value, messages, json.dumps(lineage)),
                        ):
                            made[name].append(value)
                    record(sid, round_no, "ok", child, instruction, None)
                    parent[sid], current[sid] = child, instruction
            rows.write(pa.table(out, schema=LIFT_EXPAND_SCHEMA))
            new.write_table(pa.table(made, schema=GENERATED_SCHEMA))
    batched = settle_batches(client)  # llm.mode: batch
    stats = {
        "pending": count,
        "rounds": spec.rounds,
        **planned_stats(plan),
        "generated": statuses.get("ok", 0),
        **{f"status_{k}": v for k, v in statuses.items()},
        **batched,
        **client.stats.as_dict(),
    }
    return StageOutput(rows.path, rows_in=count, stats=stats, metadata=stats, generated_samples_file=generated_path)


def write_lift_samples(con: Any, stage: str, config_hash: str, output: StageOutput) -> None:
    assert output.generated_samples_file is not None
    execute_sql_file(
        con,
        "writes/lift_expand_merge.sql",
        {
            "stage": stage,
            "config_hash": config_hash,
            "now": utc_now(),
            "samples_file": str(output.generated_samples_file),
        },
    )
    execute_sql_file(con, "writes/generated_samples_activity.sql")


LIFT_EXPAND = register_kind(
    StageKind(
        kind="lift_expand",
        role="stage",
        one_row_per_sample=False,
        spec=LiftExpandSpec,
        run=run_lift_expand,
        version="2",  # 2: child ids derived from parent and round as well as text
        summary="LIFT phase 1: an LLM rewrites/expands each original instruction for k rounds and answers it; "
        "the results become new samples with parent_id lineage.",
        table="lift_expand",
        schema_file="schema/stages/lift_expand.sql",
        rows_schema=LIFT_EXPAND_SCHEMA,
        column_lineage={
            "round": ("instruction",),
            "child_id": ("instruction", "input"),
            "status": ("instruction",),
            "instruction": ("instruction", "input"),
            "detail": ("instruction",),
        },
        tags=("python", "openai"),
        generates_samples=True,
        write_extra=write_lift_samples,
    )
)
