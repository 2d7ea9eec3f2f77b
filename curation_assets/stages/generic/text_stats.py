"""Stage `text_stats`: character/word counts per sample, computed incrementally."""

from __future__ import annotations

from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from curation_assets.methods.text_stats import text_length_stats
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.registry import StageKind, StageSpec, register_kind

TEXT_STATS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("instruction_chars", pa.int32()),
        ("input_chars", pa.int32()),
        ("output_chars", pa.int32()),
        ("instruction_words", pa.int32()),
        ("output_words", pa.int32()),
        ("conversation_chars", pa.int64()),
        ("n_turns", pa.int32()),
    ]
)


class TextStatsSpec(StageSpec):
    """Lengths of instruction, input, output and the whole conversation."""

    kind: Literal["text_stats"]
    batch_size: int = Field(10_000, gt=0, description="Samples per batch.")

    # per-sample counts that no key changes: the config hash is that of an empty config
    UNHASHED: ClassVar[frozenset[str]] = frozenset({"kind", "input_selection", "shards", "batch_size"})


def run_text_stats(spec: TextStatsSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("text_stats", ["instruction", "input", "output", "messages", "n_turns"])
    with ctx.rows_writer(TEXT_STATS_SCHEMA) as writer:
        batches = iter_parquet_batches(pending, spec.batch_size)
        for batch in ctx.progress(batches, total=-(-count // spec.batch_size), desc="batches"):
            writer.write(text_length_stats(batch).cast(TEXT_STATS_SCHEMA))
    return StageOutput(writer.path, rows_in=count)


TEXT_STATS = register_kind(
    StageKind(
        kind="text_stats",
        role="stage",
        shardable=True,
        spec=TextStatsSpec,
        run=run_text_stats,
        version="1",
        summary="Character and word counts of instruction, input, output and conversation.",
        table="text_stats",
        schema_file="schema/stages/text_stats.sql",
        rows_schema=TEXT_STATS_SCHEMA,
        column_lineage={
            "instruction_chars": ("instruction",),
            "input_chars": ("input",),
            "output_chars": ("output",),
            "instruction_words": ("instruction",),
            "output_words": ("output",),
            "conversation_chars": ("messages",),
            "n_turns": ("n_turns",),
        },
        tags=("python", "pyarrow"),
    )
)
