"""LIFT (Xu et al. 2023, "Rethinking the Instruction Quality: LIFT is What You Need").

- `lift_expand` (phase 1): an LLM acting as a prompt refinement specialist rewrites and
  expands each original instruction for `rounds` rounds (temperature 0.5); each round's
  instruction is answered by the same endpoint and enters `samples` as a new sample whose
  parent_id is the previous round's sample, so lineage back to the original is one join.
- `lift_quality`: a 100-point rubric (clarity 15, difficulty 25, explanation 25, accuracy 35)
  with few-shot examples; multi-turn conversations are rated per turn and averaged.
- `lift_top` (selection): length score = min(chars / p98, 1) * 100 over the rated pool,
  final = 0.9 * rubric + 0.1 * length, keep the top N.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from curation_assets.llm.client import ChatRequest
from curation_assets.llm.conversation import TurnChoice, clip
from curation_assets.llm.parsing import LIFT_RUBRIC, LIFT_RUBRIC_SCHEMA, clean_generation, parse_lift_rubric
from curation_assets.llm.prompts import render
from curation_assets.methods.ranking import top_k
from curation_assets.sources.normalise import sample_id_for
from curation_assets.stages.budget_spec import BudgetedSelectionSpec
from curation_assets.stages.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.llm_stage import LLMStageSpec, ask_and_parse, judge_turns_of_chunk, turn_columns
from curation_assets.stages.registry import StageKind, register_kind
from curation_assets.store.sql_files import execute_sql_file
from curation_assets.store.writes import utc_now

MESSAGES_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
LIFT_EXPAND_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("round", pa.int32()), ("child_id", pa.string()), ("status", pa.string()),
    ("instruction", pa.string()), ("detail", pa.string()),
])
GENERATED_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("parent_id", pa.string()), ("instruction", pa.string()), ("output", pa.string()),
    ("messages", MESSAGES_TYPE), ("raw_record", pa.string()),
])
REWRITE_MARKERS = ("#Rewritten Instruction#", "Rewritten Instruction", "#Instruction#", "Instruction")


class LiftExpandSpec(LLMStageSpec):
    """Rewrite/expand each original instruction for `rounds` rounds and answer it (LIFT phase 1)."""

    PROMPTS: ClassVar[tuple[str, ...]] = ("lift_expand_system", "lift_expand_user")
    kind: Literal["lift_expand"]
    rounds: int = Field(1, ge=1, le=10, description="Rewrites per original; round r rewrites round r-1.")
    temperature: float = Field(0.5, ge=0, le=2, description="Temperature of the rewrites (published: 0.5).")
    max_tokens: int = Field(384, gt=0, description="Length limit of a rewritten instruction.")
    response_temperature: float = Field(0.5, ge=0, le=2, description="Temperature of the answers.")
    response_max_tokens: int = Field(512, gt=0, description="Length limit of an answer.")


def _expand_requests(spec: LiftExpandSpec, items: list[tuple[str, str]]) -> list[ChatRequest]:
    system, user = spec.prompt("lift_expand_system"), spec.prompt("lift_expand_user")
    params = {"temperature": spec.temperature, "max_tokens": spec.max_tokens}
    return [ChatRequest(({"role": "system", "content": system},
                         {"role": "user", "content": render(user, instruction=clip(text, spec.field_chars)[0])}),
                        params, sample_id=sid) for sid, text in items]


def _answer_requests(spec: LiftExpandSpec, items: list[tuple[str, str]]) -> list[ChatRequest]:
    params = {"temperature": spec.response_temperature, "max_tokens": spec.response_max_tokens}
    return [ChatRequest(({"role": "user", "content": text},), params, sample_id=sid) for sid, text in items]


def run_lift_expand(spec: LiftExpandSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("lift_expand", ["instruction", "input"])
    client = spec.client(ctx)
    statuses: dict[str, int] = {}
    generated_path = ctx.staging_dir / f"{ctx.stage}.generated.parquet"
    with ctx.rows_writer(LIFT_EXPAND_SCHEMA) as rows, pq.ParquetWriter(generated_path, GENERATED_SCHEMA) as new:
        chunks = iter_parquet_batches(pending, spec.chunk_size)
        for chunk in ctx.progress(chunks, total=-(-count // spec.chunk_size), desc=f"expanding {count} samples"):
            current = {r["sample_id"]: r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
                       for r in chunk.to_pylist()}
            parent = {sid: sid for sid in current}
            out: dict[str, list[Any]] = {name: [] for name in LIFT_EXPAND_SCHEMA.names}
            made: dict[str, list[Any]] = {name: [] for name in GENERATED_SCHEMA.names}

            def record(sid: str, round_no: int, status: str, child: str | None, instruction: str | None,
                       detail: str | None) -> None:
                for name, value in zip(LIFT_EXPAND_SCHEMA.names, (sid, round_no, child, status, instruction, detail)):
                    out[name].append(value)
                statuses[status] = statuses.get(status, 0) + 1

            for round_no in range(1, spec.rounds + 1):
                alive = list(current)
                rewrites = ask_and_parse(client, _expand_requests(spec, [(s, current[s]) for s in alive]),
                                         lambda text: clean_generation(text, REWRITE_MARKERS),
                                         spec.parse_retries, spec.retry_temperature)
                rewritten = {}
                for sid, judged in zip(alive, rewrites):
                    if judged.value is None:
                        record(sid, round_no, "request_rejected" if judged.error else "empty_rewrite", None, None,
                               judged.error or judged.answer)
                    else:
                        rewritten[sid] = judged.value
                answers = ask_and_parse(client, _answer_requests(spec, list(rewritten.items())),
                                        lambda text: clean_generation(text), spec.parse_retries,
                                        spec.retry_temperature)
                current = {}
                for (sid, instruction), judged in zip(rewritten.items(), answers):
                    if judged.value is None:
                        record(sid, round_no, "request_rejected" if judged.error else "empty_answer", None,
                               instruction, judged.error or judged.answer)
                        continue
                    messages = [{"role": "user", "content": instruction},
                                {"role": "assistant", "content": judged.value}]
                    child = sample_id_for(messages)
                    lineage = {"generated_by": ctx.stage, "kind": "lift_expand", "round": round_no,
                               "parent_id": parent[sid], "original_id": sid, "model": spec.llm.model}
                    for name, value in zip(GENERATED_SCHEMA.names, (child, parent[sid], instruction, judged.value,
                                                                    messages, json.dumps(lineage))):
                        made[name].append(value)
                    record(sid, round_no, "ok", child, instruction, None)
                    parent[sid], current[sid] = child, instruction
            rows.write(pa.table(out, schema=LIFT_EXPAND_SCHEMA))
            new.write_table(pa.table(made, schema=GENERATED_SCHEMA))
    stats = {"pending": count, "rounds": spec.rounds, "generated": statuses.get("ok", 0),
             **{f"status_{k}": v for k, v in statuses.items()}, **client.stats.as_dict()}
    return StageOutput(rows.path, rows_in=count, stats=stats, metadata=stats, generated_samples_file=generated_path)


def write_lift_samples(con: Any, stage: str, config_hash: str, output: StageOutput) -> None:
    assert output.generated_samples_file is not None
    execute_sql_file(con, "writes/lift_expand_merge.sql", {
        "stage": stage, "config_hash": config_hash, "now": utc_now(),
        "samples_file": str(output.generated_samples_file)})
    execute_sql_file(con, "writes/generated_samples_activity.sql")


LIFT_QUALITY_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("llm_score", pa.float64()),
    *[(name, pa.float64()) for name in LIFT_RUBRIC],
    ("response_chars", pa.int64()), ("answers", pa.list_(pa.string())), ("status", pa.string()),
    ("n_turns_judged", pa.int32()), ("n_unparseable", pa.int32()), ("truncated", pa.bool_()),
])


class LiftQualitySpec(LLMStageSpec):
    """The LIFT 100-point quality rubric, rated by an LLM with few-shot examples."""

    PROMPTS: ClassVar[tuple[str, ...]] = ("lift_quality_system", "lift_quality_user")
    kind: Literal["lift_quality"]
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(96, gt=0, description="Answer length limit (five short lines).")
    turns: TurnChoice = Field("all", description="Which assistant turns are rated (then averaged).")


def run_lift_quality(spec: LiftQualitySpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("lift_quality", ["instruction", "input", "output", "messages"])
    client = spec.client(ctx)
    system, user = spec.prompt("lift_quality_system"), spec.prompt("lift_quality_user")
    params = {"temperature": spec.temperature, "max_tokens": spec.max_tokens, **spec.response_format(LIFT_RUBRIC_SCHEMA)}
    statuses: dict[str, int] = {}
    with ctx.rows_writer(LIFT_QUALITY_SCHEMA) as writer:
        chunks = iter_parquet_batches(pending, spec.chunk_size)
        for chunk in ctx.progress(chunks, total=-(-count // spec.chunk_size), desc=f"rating {count} samples"):
            rows = chunk.to_pylist()

            def request(sid: str, turn: Any) -> ChatRequest:
                text = turn.instruction + (f"\n{turn.input}" if turn.input else "")
                return ChatRequest(({"role": "system", "content": system}, {"role": "user", "content": render(
                    user, instruction=text, response=turn.response)}), params, sample_id=sid)

            judged = judge_turns_of_chunk(spec, client, rows, request, parse_lift_rubric)
            out: dict[str, list[Any]] = {name: [] for name in LIFT_QUALITY_SCHEMA.names}
            for row, (sample_turns, mine) in zip(rows, judged):
                parsed = [j.value for j in mine if j.value is not None]
                columns = {"sample_id": row["sample_id"],
                           "llm_score": float(np.mean([p["total"] for p in parsed])) if parsed else None,
                           **{name: float(np.mean([p[name] for p in parsed])) if parsed else None
                              for name in LIFT_RUBRIC},
                           "response_chars": sum(len(m["content"]) for m in row["messages"]
                                                 if m["role"] == "assistant"),
                           **turn_columns(sample_turns, mine)}
                statuses[columns["status"]] = statuses.get(columns["status"], 0) + 1
                for name in LIFT_QUALITY_SCHEMA.names:
                    out[name].append(columns[name])
            writer.write(pa.table(out, schema=LIFT_QUALITY_SCHEMA))
    stats = {"pending": count, "model": spec.llm.model, **{f"status_{k}": v for k, v in statuses.items()},
             **client.stats.as_dict()}
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)


class LiftTopSpec(BudgetedSelectionSpec):
    """Top samples by 0.9 * rubric + 0.1 * length score (LIFT's final quality score)."""

    kind: Literal["lift_top"]
    stage: str = Field(description="The `lift_quality` stage whose ratings are used.")
    llm_weight: float = Field(0.9, ge=0, le=1, description="Weight of the rubric score; length gets 1 - this.")
    length_percentile: float = Field(98.0, gt=0, le=100, description="Length score = min(chars / p_this, 1) * 100.")

    def references(self) -> dict[str, str]:
        return {**super().references(), "stage": self.stage}

    def score_sources(self) -> list[tuple[str, str]]:
        return [(self.stage, "llm_score"), (self.stage, "response_chars")]

    def check_references(self, stage_kinds: Any, selection_names: set[str]) -> list[tuple[str, str]]:
        problems = super().check_references(stage_kinds, selection_names)
        kind = stage_kinds.get(self.stage)
        if (kind is None and self.stage in selection_names) or (kind is not None and kind.kind != "lift_quality"):
            problems.append(("stage", f"{self.stage!r} is not a lift_quality stage"))
        return problems


def lift_final_scores(llm_score: np.ndarray, response_chars: np.ndarray, llm_weight: float = 0.9,
                      percentile: float = 98.0) -> np.ndarray:
    """final = w * llm + (1 - w) * min(len / p98(len), 1) * 100; NaN where the rubric is missing."""
    reference = float(np.percentile(response_chars, percentile)) if response_chars.size else 0.0
    length_score = np.minimum(response_chars / reference, 1.0) * 100 if reference > 0 else np.zeros_like(llm_score)
    return llm_weight * llm_score + (1 - llm_weight) * length_score


def run_lift_top(spec: LiftTopSpec, ctx: StageContext) -> StageOutput:
    rows = ctx.stage_rows(spec.stage, ["llm_score", "response_chars"])
    llm = rows.column("llm_score").to_numpy(zero_copy_only=False).astype(np.float64)
    chars = rows.column("response_chars").to_numpy(zero_copy_only=False).astype(np.float64)
    rated = np.flatnonzero(~np.isnan(llm))
    final = lift_final_scores(llm[rated], chars[rated], spec.llm_weight, spec.length_percentile)
    k = spec.budget_for(rows.num_rows) if rated.size else 0
    order = top_k(final, min(k, rated.size), descending=True)
    ids = rows.column("sample_id").to_pylist()
    members = ctx.write_members([ids[rated[i]] for i in order], final[order].tolist())
    stats = {"pool": rows.num_rows, "rated": int(rated.size), "budget": k, "selected": int(order.size)}
    return StageOutput(members, rows_in=rows.num_rows, stats=stats, metadata=dict(stats))


LIFT_EXPAND = register_kind(StageKind(
    kind="lift_expand", role="stage", one_row_per_sample=False, spec=LiftExpandSpec, run=run_lift_expand, version="1",
    summary="LIFT phase 1: an LLM rewrites/expands each original instruction for k rounds and answers it; "
            "the results become new samples with parent_id lineage.",
    table="lift_expand", schema_file="schema/stages/lift_expand.sql",
    column_lineage={"round": ("instruction",), "child_id": ("instruction", "input"), "status": ("instruction",),
                    "instruction": ("instruction", "input"), "detail": ("instruction",)},
    tags=("python", "openai"), generates_samples=True, write_extra=write_lift_samples,
))

LIFT_QUALITY = register_kind(StageKind(
    kind="lift_quality", role="stage", shardable=True, spec=LiftQualitySpec, run=run_lift_quality, version="1",
    summary="LIFT quality: an LLM grades each sample on a 100-point rubric (clarity, difficulty, explanation, "
            "accuracy).",
    table="lift_quality", schema_file="schema/stages/lift_quality.sql",
    column_lineage={**{c: ("instruction", "input", "output", "messages") for c in
                       ("llm_score", *LIFT_RUBRIC, "answers", "status", "n_turns_judged", "n_unparseable",
                        "truncated")}, "response_chars": ("messages",)},
    tags=("python", "openai"),
))

LIFT_TOP = register_kind(StageKind(
    kind="lift_top", role="selection", spec=LiftTopSpec, run=run_lift_top, version="1",
    summary="LIFT: top N by 0.9 * rubric score + 0.1 * length score.", tags=("python", "numpy"),
))
