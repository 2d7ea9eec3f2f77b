"""Stage `deita_evol`: DEITA's Evol-Complexity and Evol-Quality training labels (Liu et al. 2024,
"What Makes Good Data for Alignment?").

Evol-Complexity: a seed instruction is evolved `iterations` times (M = 5 in the paper), each
step making the previous variant harder with one of four in-depth operations (add
constraints, deepen, concretise, increase reasoning steps; taken in turn); the LLM then ranks
the M + 1 variants together and scores each 1..M+1. Evol-Quality does the same to the
response (helpfulness, relevance, depth, creativity, detail) under the fixed instruction.
The rows (text, score) are the labels the complexity and quality scorers are trained on.
Multi-turn conversations contribute their first (instruction, response) pair.
With `structured_output` the ranking is constrained to a JSON object of the M + 1 scores
(small local judges rarely keep the free-text format). A ranking that does not parse is
re-asked, then recorded as unparseable with NULL scores (DEITA's code would return 3.0; we
never invent a score).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from curation_assets.llm.client import ChatRequest
from curation_assets.llm.conversation import clip
from curation_assets.llm.parsing import clean_generation, parse_ranked_scores, ranked_scores_schema
from curation_assets.llm.prompts import render
from curation_assets.llm.spend import prompt_tokens
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.llm_stage import (
    LLMStageSpec,
    ask_and_parse,
    check_spend,
    planned_stats,
    settle_batches,
)
from curation_assets.stages.core.registry import StageKind, register_kind

COMPLEXITY_METHODS = (
    ("add_constraints", "Add one more constraint or requirement to it."),
    ("deepen", "If it asks about a certain issue, increase the depth and breadth of the inquiry."),
    ("concretise", "Replace general concepts with more specific concepts."),
    (
        "increase_reasoning",
        "If it can be solved with a few simple thinking steps, rewrite it to explicitly "
        "request multiple-step reasoning.",
    ),
)
QUALITY_METHODS = (
    ("helpfulness", "Make it more helpful to the user, e.g. by adding useful information the question implies."),
    ("relevance", "Make it more relevant to the question, removing anything off the point."),
    ("depth", "Make it deeper, explaining the reasons and details behind the answer."),
    ("creativity", "Make it more creative and engaging while staying correct."),
    ("details", "Add more concrete details and examples."),
)
Dimension = Literal["complexity", "quality"]
DEITA_EVOL_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("dimension", pa.string()),
        ("variant", pa.int32()),
        ("operation", pa.string()),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("score", pa.float64()),
        ("status", pa.string()),
        ("ranking_answer", pa.string()),
    ]
)


class DeitaEvolSpec(LLMStageSpec):
    """Evolve each sample into harder instructions / better responses and have the LLM score them."""

    PROMPTS: ClassVar[tuple[str, ...]] = (
        "deita_complexity_evolve",
        "deita_complexity_score",
        "deita_quality_evolve",
        "deita_quality_score",
    )
    BATCH_ROUNDS: ClassVar[bool] = True  # llm.mode: batch sends each round as one Batch job
    kind: Literal["deita_evol"]
    dimensions: list[Dimension] = Field(
        ["complexity", "quality"],
        min_length=1,
        description=("Which labels to make: complexity (evolved instructions) and/or quality (evolved responses)."),
    )
    iterations: int = Field(5, ge=1, le=8, description="Evolution steps M; M + 1 variants are scored (paper: 5).")
    temperature: float = Field(0.7, ge=0, le=2, description="Temperature of the evolution steps.")
    max_tokens: int = Field(512, gt=0, description="Length limit of an evolved instruction or response.")
    score_temperature: float = Field(0.0, ge=0, le=2, description="Temperature of the ranking request.")
    score_max_tokens: int = Field(128, gt=0, description="Length limit of the ranking answer.")


def _evolve_requests(
    spec: DeitaEvolSpec, dimension: Dimension, items: list[tuple[str, str, str]], step: int
) -> tuple[list[ChatRequest], str]:
    """items: (sample_id, instruction, text being evolved). Returns requests and the operation name."""
    methods = COMPLEXITY_METHODS if dimension == "complexity" else QUALITY_METHODS
    operation, method = methods[(step - 1) % len(methods)]
    template = spec.prompt(f"deita_{dimension}_evolve")
    params = {"temperature": spec.temperature, "max_tokens": spec.max_tokens}
    requests = []
    for sid, instruction, text in items:
        content = (
            render(template, method=method, instruction=text)
            if dimension == "complexity"
            else render(template, method=method, instruction=instruction, response=text)
        )
        requests.append(ChatRequest(({"role": "user", "content": content},), params, sample_id=sid))
    return requests, operation


def _score_request(
    spec: DeitaEvolSpec, dimension: Dimension, sid: str, instruction: str, variants: list[str]
) -> ChatRequest:
    label = "Question" if dimension == "complexity" else "Response"
    items = "\n\n".join(f"[{label} {k}]\n{clip(text, spec.field_chars)[0]}" for k, text in enumerate(variants, 1))
    content = render(
        spec.prompt(f"deita_{dimension}_score"),
        count=len(variants),
        items=items,
        instruction=clip(instruction, spec.field_chars)[0],
    )
    params = {
        "temperature": spec.score_temperature,
        "max_tokens": spec.score_max_tokens,
        **spec.response_format(ranked_scores_schema(label, len(variants))),
    }
    return ChatRequest(({"role": "user", "content": content},), params, sample_id=sid)


def _evolve_dimension(
    spec: DeitaEvolSpec,
    client: Any,
    dimension: Dimension,
    seeds: list[tuple[str, str, str]],
    out: dict[str, list[Any]],
    statuses: dict[str, int],
) -> None:
    """seeds: (sample_id, instruction, response). Appends M + 1 rows per seed to `out`."""
    chains: dict[str, list[tuple[str, str]]] = {  # sample -> [(operation, text)], variant 0 = the seed
        sid: [("seed", instruction if dimension == "complexity" else response)] for sid, instruction, response in seeds
    }
    instruction_of = {sid: instruction for sid, instruction, _ in seeds}
    response_of = {sid: response for sid, _, response in seeds}
    broken: set[str] = set()
    for step in range(1, spec.iterations + 1):
        alive = [(sid, instruction_of[sid], chains[sid][-1][1]) for sid, _, _ in seeds if sid not in broken]
        if not alive:
            break
        requests, operation = _evolve_requests(spec, dimension, alive, step)
        judged = ask_and_parse(client, requests, clean_generation, spec.parse_retries, spec.retry_temperature)
        for (sid, _, _), result in zip(alive, judged):
            if result.value is None:
                broken.add(sid)
            else:
                chains[sid].append((operation, result.value))
    rankable = [sid for sid, _, _ in seeds if len(chains[sid]) >= 2]
    label = "Question" if dimension == "complexity" else "Response"
    requests = [
        _score_request(spec, dimension, sid, instruction_of[sid], [t for _, t in chains[sid]]) for sid in rankable
    ]
    parsers = [functools.partial(parse_ranked_scores, label=label, count=len(chains[sid])) for sid in rankable]
    scored = dict(zip(rankable, ask_and_parse(client, requests, parsers, spec.parse_retries, spec.retry_temperature)))
    for sid, _, _ in seeds:
        chain = chains[sid]
        scores = scored[sid].value if sid in scored else None
        status = (
            "ok"
            if scores is not None and sid not in broken
            else "chain_broken"
            if scores is not None
            else "too_few_variants"
            if sid not in scored
            else "request_rejected"
            if scored[sid].error
            else "unparseable"
        )
        statuses[f"{dimension}_{status}"] = statuses.get(f"{dimension}_{status}", 0) + 1
        for variant, (operation, text) in enumerate(chain):
            out["sample_id"].append(sid)
            out["dimension"].append(dimension)
            out["variant"].append(variant)
            out["operation"].append(operation)
            out["instruction"].append(text if dimension == "complexity" else instruction_of[sid])
            out["response"].append(
                response_of[sid]
                if dimension == "complexity" and variant == 0
                else None
                if dimension == "complexity"
                else text
            )
            out["score"].append(scores[variant] if scores is not None else None)
            out["status"].append(status)
            out["ranking_answer"].append(scored[sid].answer if sid in scored else None)


def _seed(row: dict[str, Any]) -> tuple[str, str, str]:
    """(sample_id, instruction + input, response) of a pending row."""
    return row["sample_id"], row["instruction"] + (f"\n\n{row['input']}" if row["input"] else ""), row["output"]


def _first_requests(spec: DeitaEvolSpec, row: dict[str, Any]) -> list[ChatRequest]:
    """The step-1 evolution request of each dimension (known before any answer)."""
    sid, instruction, response = _seed(row)
    return [
        _evolve_requests(
            spec, dimension, [(sid, instruction, instruction if dimension == "complexity" else response)], 1
        )[0][0]
        for dimension in spec.dimensions
    ]


def _followups(spec: DeitaEvolSpec, first: ChatRequest) -> list[tuple[int, int]]:
    """(prompt tokens, max tokens) of what follows a step-1 request: steps 2..M (each evolving the last
    variant, at most max_tokens long) and the ranking of the M + 1 variants."""
    step = (prompt_tokens(first) + spec.max_tokens, spec.max_tokens)
    ranking = (prompt_tokens(first) + (spec.iterations + 1) * spec.max_tokens, spec.score_max_tokens)
    return [step] * (spec.iterations - 1) + [ranking]


def run_deita_evol(spec: DeitaEvolSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("deita_evol", ["instruction", "input", "output"])
    client = spec.client(ctx)
    plan = check_spend(  # before anything is sent: step-1 evolutions and what follows them
        spec,
        client,
        pending,
        lambda rows: [_first_requests(spec, row) for row in rows],
        lambda first: _followups(spec, first),
    )
    statuses: dict[str, int] = {}
    with ctx.rows_writer(DEITA_EVOL_SCHEMA) as writer:
        chunks = iter_parquet_batches(pending, spec.chunk_size)
        for chunk in ctx.progress(chunks, total=-(-count // spec.chunk_size), desc=f"evolving {count} samples"):
            seeds = [_seed(r) for r in chunk.to_pylist()]
            out: dict[str, list[Any]] = {name: [] for name in DEITA_EVOL_SCHEMA.names}
            for dimension in spec.dimensions:
                _evolve_dimension(spec, client, dimension, seeds, out, statuses)
            writer.write(pa.table(out, schema=DEITA_EVOL_SCHEMA))
    batched = settle_batches(client)  # llm.mode: batch
    stats = {
        "pending": count,
        "iterations": spec.iterations,
        **planned_stats(plan),
        **statuses,
        **batched,
        **client.stats.as_dict(),
    }
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)


DEITA_EVOL = register_kind(
    StageKind(
        kind="deita_evol",
        role="stage",
        one_row_per_sample=False,
        spec=DeitaEvolSpec,
        run=run_deita_evol,
        version="1",
        summary="DEITA Evol-Complexity / Evol-Quality: LLM-evolved variants with 1..M+1 scores (scorer training "
        "labels).",
        table="deita_evol",
        schema_file="schema/stages/deita_evol.sql",
        rows_schema=DEITA_EVOL_SCHEMA,
        column_lineage=dict.fromkeys(
            ("dimension", "variant", "operation", "instruction", "response", "score", "status", "ranking_answer"),
            ("instruction", "input", "output"),
        ),
        tags=("python", "openai"),
    )
)
