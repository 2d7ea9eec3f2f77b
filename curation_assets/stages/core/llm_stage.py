"""Keys and helpers shared by the LLM-judged stages (AlpaGasus, LIFT, DEITA evol).

A stage builds one ChatRequest per item, the client answers them through the cache, and
answers that do not parse are asked again (`parse_retries`, at `retry_temperature`: at
temperature 0 the same request would give the same answer). Requests that still fail for
transport reasons make the stage fail after every answer received is cached, so a re-run
pays only for the rest; permanent 4xx failures and unparseable answers become rows.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

import pyarrow as pa
from pydantic import Field, model_validator

from curation_assets.llm.batch import BatchKey, BatchRunner
from curation_assets.llm.cache import ChatAnswer, LLMCache
from curation_assets.llm.client import ChatRequest, LLMClient, RequestFailure
from curation_assets.llm.endpoint import LLMEndpointSpec
from curation_assets.llm.prompts import load_prompt
from curation_assets.llm.spend import SpendGuard, SpendPlan
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.registry import StageSpec

T = TypeVar("T")
# the columns `turn_columns` fills, in table order: every per-turn judge table ends with them
TURN_FIELDS = (
    ("answers", pa.list_(pa.string())),
    ("status", pa.string()),
    ("n_turns_judged", pa.int32()),
    ("n_unparseable", pa.int32()),
    ("truncated", pa.bool_()),
)
TURN_COLUMNS = tuple(name for name, _ in TURN_FIELDS)


class LLMStageSpec(StageSpec):
    """Keys every LLM-judged stage has."""

    PROMPTS: ClassVar[tuple[str, ...]] = ()
    # kinds whose requests are all known before any answer (one round): they take `llm.mode: batch`
    # through `prefill_by_batch`
    BATCH_MODE: ClassVar[bool] = False
    # multi-round kinds (each round's requests depend on the previous answers): under `llm.mode: batch`
    # every round of `ask_and_parse` goes as one Batch job (the client carries a BatchRunner)
    BATCH_ROUNDS: ClassVar[bool] = False

    llm: LLMEndpointSpec = Field(
        default_factory=LLMEndpointSpec,
        description=(
            "The OpenAI-compatible endpoint: base_url, model, api_key_env, max_concurrency, timeout_s, "
            "max_retries, backoff_s, backoff_max_s, mode (sync | batch) with batch_poll_seconds, "
            "batch_timeout_seconds, batch_max_requests, and the spend guard max_requests_per_run, "
            "input_price_per_mtok, output_price_per_mtok, max_cost_per_run."
        ),
    )
    prompts: dict[str, str] = Field(
        default_factory=dict,
        description=("Prompt name -> text file replacing the packaged prompt (relative to the YAML file)."),
    )
    parse_retries: int = Field(2, ge=0, le=10, description="Re-asks of an answer that does not parse.")
    retry_temperature: float = Field(0.7, ge=0, le=2, description="Temperature of those re-asks.")
    field_chars: int = Field(
        6000,
        gt=100,
        description=("Instruction / response text beyond this many characters is cut (counted as truncated)."),
    )
    context_chars: int = Field(2000, ge=0, description="Earlier turns shown with a multi-turn turn (last N chars).")
    chunk_size: int = Field(256, gt=0, description="Samples whose requests are in flight together.")
    structured_output: Literal["none", "json_schema", "llama_cpp"] = Field(
        "none",
        description=(
            "Constrain judge answers to the recipe's JSON schema: json_schema (OpenAI / vLLM "
            "`response_format`), llama_cpp (llama.cpp's json_object + schema); none = the published free-text "
            "answer. Small local judges rarely follow the free-text format."
        ),
    )

    @model_validator(mode="after")
    def _batch_mode_supported(self) -> LLMStageSpec:
        if self.llm.mode == "batch" and not (self.BATCH_MODE or self.BATCH_ROUNDS):
            raise ValueError(
                f"llm.mode: batch is not available for kind {self.kind!r}; batch mode takes alpagasus, "
                "lift_quality, lift_expand and deita_evol. Use llm.mode: sync (the default) for this stage"
            )
        return self

    def response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Request parameters constraining the answer to `schema` (empty when structured_output is none)."""
        if self.structured_output == "json_schema":
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": self.kind, "schema": schema, "strict": True},
                }
            }
        if self.structured_output == "llama_cpp":
            return {"response_format": {"type": "json_object", "schema": schema}}
        return {}

    # chunk_size does not change results; llm and prompts enter as their own hashes (below)
    UNHASHED: ClassVar[frozenset[str]] = frozenset({"chunk_size", "llm", "prompts"})

    def hashed_config(self) -> dict[str, Any]:
        config = super().hashed_config()
        config["llm"] = self.llm.hashed_config()
        config["prompts"] = {
            name: hashlib.sha256(self.prompt(name).encode()).hexdigest()[:16] for name in sorted(self.prompts)
        }
        return config

    def pool(self) -> str | None:
        return self.llm.pool_name()

    def check_files(self, base_dir: Path) -> list[tuple[str, str]]:
        problems = []
        for name, path in self.prompts.items():
            if name not in self.PROMPTS:
                problems.append(
                    ("prompts", f"{self.kind} has no prompt {name!r}; its prompts: {', '.join(self.PROMPTS)}")
                )
            elif not _resolve(path, base_dir).is_file():
                problems.append(("prompts", f"prompt file not found: {_resolve(path, base_dir)}"))
        return problems

    def with_base_dir(self, base_dir: Path) -> LLMStageSpec:
        return self.model_copy(update={"prompts": {n: str(_resolve(p, base_dir)) for n, p in self.prompts.items()}})

    def prompt(self, name: str) -> str:
        return load_prompt(name, self.prompts)

    def client(self, ctx: StageContext) -> LLMClient:
        client = LLMClient(
            self.llm,
            LLMCache(ctx.store),
            pipeline=ctx.pipeline,
            stage=ctx.stage,
            log=ctx.log,
            guard=SpendGuard(self.llm, ctx.stage, ctx.shard),
        )
        if self.llm.mode == "batch" and self.BATCH_ROUNDS:
            client.batch_runner = BatchRunner(client, batch_key(ctx))
        return client


def batch_key(ctx: StageContext) -> BatchKey:
    """The stage run an `llm_batches` row belongs to (a sharded run: its shard)."""
    shard = f"{ctx.shard[0]}/{ctx.shard[1]}" if ctx.shard else ""
    return BatchKey(ctx.pipeline, ctx.stage, ctx.config_hash, shard)


def settle_batches(client: LLMClient) -> dict[str, Any]:
    """After a multi-round stage's last round: cache the open batches no round asked for (paid for;
    their samples went away), and return the batch counts for metadata (empty in sync mode)."""
    if client.batch_runner is None:
        return {}
    return client.batch_runner.settle().as_dict()


def _resolve(path: str, base_dir: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base_dir / candidate


class LLMRequestsFailed(RuntimeError):
    """Some requests got no answer after every retry; the answers that did arrive are cached."""


@dataclass
class Judged(Generic[T]):
    """Outcome of one item: a parsed value, or why there is none."""

    value: T | None
    answer: str | None  # the last answer text
    error: str | None  # a permanent request failure (e.g. prompt longer than the context)
    attempts: int


def ask_and_parse(
    client: LLMClient,
    requests: Sequence[ChatRequest],
    parse: Callable[[str], T | None] | Sequence[Callable[[str], T | None]],
    parse_retries: int,
    retry_temperature: float,
) -> list[Judged[T]]:
    """Answer every request, re-asking unparseable answers; raise LLMRequestsFailed on transport failures.

    `parse` is one parser for every answer, or one per request."""
    parsers = list(parse) if isinstance(parse, Sequence) else [parse] * len(requests)
    results: list[Judged[T] | None] = [None] * len(requests)
    todo = list(range(len(requests)))
    transient: list[RequestFailure] = []
    for attempt in range(parse_retries + 1):
        if not todo:
            break
        if attempt == 0 and client.batch_runner is not None:
            # llm.mode: batch: this round's first asks go as one Batch job into llm_cache (a batch of
            # them an earlier run left open is resumed instead); re-asks and unanswered lines go as chat
            # requests
            client.batch_runner.run(requests, only_asked=True)
        batch = [
            requests[i]
            if attempt == 0
            else ChatRequest(
                requests[i].messages,
                {**requests[i].params, "temperature": retry_temperature},
                attempt,
                requests[i].sample_id,
            )
            for i in todo
        ]
        outcomes = client.complete_all(batch)
        retry = []
        for i, outcome in zip(todo, outcomes):
            if isinstance(outcome, RequestFailure):
                if not outcome.permanent:
                    transient.append(outcome)
                results[i] = Judged(None, None, outcome.error, attempt + 1)
                continue
            assert isinstance(outcome, ChatAnswer)
            value = parsers[i](outcome.text)
            results[i] = Judged(value, outcome.text, None, attempt + 1)
            if value is None:
                retry.append(i)
        if transient:
            break
        todo = retry
    if transient:
        stats = client.stats
        raise LLMRequestsFailed(
            f"{len(transient)} request(s) to {client.endpoint.display_url} failed after {client.endpoint.max_retries} "
            f"retries (last: {transient[-1].error}); {stats.requests - stats.failed} answers are in llm_cache; "
            "run the stage again to retry the rest (cached answers are not requested again)"
        )
    return [r for r in results if r is not None]


def judge_turns_of_chunk(
    spec: LLMStageSpec,
    client: LLMClient,
    rows: list[dict[str, Any]],
    request: Callable[[str, Any], ChatRequest],
    parse: Callable[[str], T | None],
) -> list[tuple[list[Any], list[Judged[T]]]]:
    """Per sample row: its judged turns (llm/conversation.py rule) and each turn's Judged answer."""
    turns, per_row = turn_requests(spec, rows, request)
    requests = [r for row in per_row for r in row]
    judged = ask_and_parse(client, requests, parse, spec.parse_retries, spec.retry_temperature)
    out, start = [], 0
    for sample_turns in turns:
        out.append((sample_turns, judged[start : start + len(sample_turns)]))
        start += len(sample_turns)
    return out


def turn_requests(
    spec: LLMStageSpec, rows: list[dict[str, Any]], request: Callable[[str, Any], ChatRequest]
) -> tuple[list[list[Any]], list[list[ChatRequest]]]:
    """Per sample row: its judged turns (llm/conversation.py rule) and one request per turn."""
    from curation_assets.llm.conversation import TurnChoice, judged_turns

    which: TurnChoice = getattr(spec, "turns", "all")  # kinds without `turns` judge every turn
    turns = [
        judged_turns(
            r["messages"],
            r["instruction"],
            r["input"],
            r["output"],
            which=which,
            field_chars=spec.field_chars,
            context_chars=spec.context_chars,
        )
        for r in rows
    ]
    return turns, [[request(r["sample_id"], t) for t in ts] for r, ts in zip(rows, turns)]


Followups = Callable[[ChatRequest], Sequence[tuple[int, int]]]


def check_spend(
    spec: LLMStageSpec,
    client: LLMClient,
    pending: Path,
    first_requests: Callable[[list[dict[str, Any]]], list[list[ChatRequest]]],
    followups: Followups | None = None,
) -> SpendPlan | None:
    """Before anything is sent: count the requests the pending samples need that are not in
    llm_cache, and raise SpendLimitExceeded when they exceed `llm.max_requests_per_run` or
    `llm.max_cost_per_run`. `first_requests` gives each row's requests known up front; `followups`
    (prompt tokens, max tokens) of the requests that will follow a first request's answer (later
    rounds, rankings), counted for each first request that is not cached (those of a
    cached first request are unknown until its answers are read; the client's per-batch check covers them)."""
    guard = client.guard
    if guard is None or (guard.max_requests is None and guard.max_cost is None):
        return None
    model = spec.llm.model
    plan = SpendPlan()
    seen: set[str] = set()
    for chunk in iter_parquet_batches(pending, spec.chunk_size):
        per_row = first_requests(chunk.to_pylist())
        hashes = [[r.cache_key(model)[0] for r in requests] for requests in per_row]
        fresh = list({h for row in hashes for h in row if h not in seen})
        cached = set(client.cache.lookup(fresh)) if client.cache is not None else set()
        for requests, row_hashes in zip(per_row, hashes):
            plan.samples += 1
            for request, request_hash in zip(requests, row_hashes):
                if request_hash in seen:  # an identical request is sent once
                    continue
                seen.add(request_hash)
                if request_hash in cached:
                    plan.cached += 1
                    continue
                plan.add(request)
                for prompt, answer in followups(request) if followups is not None else ():
                    plan.add_tokens(prompt, answer)
                    plan.followups += 1
    plan.cost = guard.cost(plan)
    guard.check_plan(plan)
    return plan


def prefill_by_batch(
    spec: LLMStageSpec,
    client: LLMClient,
    ctx: StageContext,
    pending: Path,
    first_requests: Callable[[list[dict[str, Any]]], list[list[ChatRequest]]],
) -> dict[str, Any]:
    """`llm.mode: batch`: answer every pending sample's first requests through Batch jobs into
    llm_cache (llm/batch.py) before the stage's chunks run; those then read the cache, and only
    re-asks of unparseable answers and lines the batch left unanswered go as chat requests.
    Returns the batch counts for metadata (empty in sync mode)."""
    if spec.llm.mode != "batch":
        return {}
    requests = [
        request
        for chunk in iter_parquet_batches(pending, spec.chunk_size)
        for row in first_requests(chunk.to_pylist())
        for request in row
    ]
    return BatchRunner(client, batch_key(ctx)).run(requests).as_dict()


def planned_stats(plan: SpendPlan | None) -> dict[str, Any]:
    """The spend guard's count for metadata and `stage_runs` (empty when the run had no limit)."""
    if plan is None:
        return {}
    cost = {} if plan.cost is None else {"llm_estimated_cost": round(plan.cost, 6)}
    return {"llm_planned_requests": plan.requests, "llm_planned_cached": plan.cached, **cost}


def turn_columns(sample_turns: list[Any], judged: list[Judged[Any]]) -> dict[str, Any]:
    """The `TURN_COLUMNS` of one sample: status, answers, counts, truncated."""
    parsed = sum(j.value is not None for j in judged)
    status = (
        "request_rejected"
        if any(j.error for j in judged)
        else "ok"
        if parsed == len(judged)
        else "partial"
        if parsed
        else "unparseable"
    )
    return {
        "status": status,
        "answers": [j.answer if j.answer is not None else f"[request failed] {j.error}" for j in judged],
        "n_turns_judged": len(judged),
        "n_unparseable": sum(j.error is None and j.value is None for j in judged),
        "truncated": any(t.truncated for t in sample_turns),
    }


def run_turn_judge(
    spec: LLMStageSpec,
    ctx: StageContext,
    *,
    table: str,
    schema: pa.Schema,
    request: Callable[[str, Any], ChatRequest],
    parse: Callable[[str], T | None],
    sample_columns: Callable[[dict[str, Any], list[Judged[T]]], dict[str, Any]],
    verb: str,
) -> StageOutput:
    """The run of a kind that has an LLM judge each sample's turns (AlpaGasus, LIFT quality): the
    spend check and `llm.mode: batch` prefill over the pending samples, then per chunk every turn
    asked and one row per sample: its `sample_id`, `sample_columns(row, judged turns)` (the kind's
    scores) and the `TURN_COLUMNS`."""
    pending, count = ctx.pending_samples(table, ["instruction", "input", "output", "messages"])
    client = spec.client(ctx)

    def first(rows: list[dict[str, Any]]) -> list[list[ChatRequest]]:
        return turn_requests(spec, rows, request)[1]

    plan = check_spend(spec, client, pending, first)  # before anything is sent
    batched = prefill_by_batch(spec, client, ctx, pending, first)  # llm.mode: batch
    started = time.perf_counter()
    statuses: dict[str, int] = {}
    with ctx.rows_writer(schema) as writer:
        chunks = iter_parquet_batches(pending, spec.chunk_size)
        for chunk in ctx.progress(chunks, total=-(-count // spec.chunk_size), desc=f"{verb} {count} samples"):
            rows = chunk.to_pylist()
            out: dict[str, list[Any]] = {name: [] for name in schema.names}
            for row, (sample_turns, judged) in zip(rows, judge_turns_of_chunk(spec, client, rows, request, parse)):
                columns = {
                    "sample_id": row["sample_id"],
                    **sample_columns(row, judged),
                    **turn_columns(sample_turns, judged),
                }
                statuses[columns["status"]] = statuses.get(columns["status"], 0) + 1
                for name in schema.names:
                    out[name].append(columns[name])
            writer.write(pa.table(out, schema=schema))
    stats = {
        "pending": count,
        "model": spec.llm.model,
        **planned_stats(plan),
        **batched,
        **{f"status_{k}": v for k, v in statuses.items()},
        **client.stats.as_dict(),
        "seconds_judging": round(time.perf_counter() - started, 3),
    }
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)
