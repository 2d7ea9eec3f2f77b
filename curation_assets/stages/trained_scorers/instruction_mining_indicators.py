"""Stage `instruction_mining_indicators` (Cao et al. 2023, Instruction Mining): the natural-
language indicators of each sample, one row per sample:

- `input_length` / `output_length`: instruction + input, and output (first assistant reply),
  in whitespace-separated words (`length_unit: words`, default) or tokens of a tokenizer;
- `reward`: any stage column the user names (the paper: a reward model's score);
- `perplexity`: the `perplexity` column of an `lm_loss` stage;
- `mtld`: MTLD lexical diversity of the output (methods/mtld.py, threshold 0.72);
- `knn`: KNN-i, the mean Euclidean distance to the i (`knn_k`, default 6 as in the paper)
  nearest other samples in an `embedding` stage, searched exactly among the samples embedded
  when the row is computed (`knn_pool` says how many; rows are not recomputed as the pool grows);
- `extra`: any other stage columns (`extra_scores`), as '<stage>.<column>' -> value.

An upstream stage without a value for a sample gives NULL, listed in the row's `missing` and
counted in the run's stats; nothing is filled in here (the fit imputes, and says so).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from curation_assets.arrow_compute import pc
from curation_assets.methods.instruction_mining import knn_mean_distance
from curation_assets.methods.mtld import MTLD_THRESHOLD, mtld, mtld_words
from curation_assets.methods.text_stats import WORD_PATTERN
from curation_assets.models.causal_lm import PACKAGED_SMOLLM2, resolve_causal_lm
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.instruction_mining import INDICATORS_SCHEMA
from curation_assets.stages.core.registry import StageKind, StageSpec, register_kind, stage_reference_problems
from curation_assets.stages.core.score_input import ScoreColumn, aligned_scores


class InstructionMiningIndicatorsSpec(StageSpec):
    """Instruction Mining's per-sample indicators (lengths, reward, perplexity, MTLD, kNN-i, extras)."""

    kind: Literal["instruction_mining_indicators"]
    embedding: str | None = Field(None, description="The `embedding` stage for kNN-i (none: no `knn`).")
    knn_k: int = Field(6, gt=0, description="i of kNN-i: neighbours averaged (paper: 6).")
    perplexity: str | None = Field(None, description="An `lm_loss` stage whose `perplexity` column is used.")
    reward: ScoreColumn | None = Field(None, description="The reward score: `{stage, column}` of any stage.")
    extra_scores: list[ScoreColumn] = Field(
        default_factory=list,
        description=("More indicators: `{stage, column}` pairs, stored in `extra` as '<stage>.<column>'."),
    )
    length_unit: Literal["words", "tokens"] = Field(
        "words",
        description=("words: whitespace-separated words (as text_stats counts them); tokens: tokens of `tokenizer`."),
    )
    tokenizer: str = Field(PACKAGED_SMOLLM2, description="Tokenizer for `length_unit: tokens` (a causal LM name).")
    mtld_threshold: float = Field(MTLD_THRESHOLD, gt=0, lt=1, description="MTLD's TTR threshold (published 0.72).")
    batch_size: int = Field(4096, gt=0, description="Samples per batch (does not change results).")

    @model_validator(mode="after")
    def _distinct_extras(self) -> InstructionMiningIndicatorsSpec:
        labels = [s.label for s in self.extra_scores]
        if len(set(labels)) != len(labels):
            raise ValueError(f"extra_scores lists a stage column twice: {labels}")
        return self

    def score_inputs(self) -> list[tuple[str, str]]:
        """(YAML key, stage) of every stage this one reads."""
        pairs = [
            ("embedding", self.embedding),
            ("perplexity", self.perplexity),
            ("reward", self.reward.stage if self.reward else None),
        ]
        pairs += [(f"extra_scores.{i}", s.stage) for i, s in enumerate(self.extra_scores)]
        return [(key, stage) for key, stage in pairs if stage]

    def references(self) -> dict[str, str]:
        refs = super().references()
        for key, stage in self.score_inputs():
            if stage not in refs.values():  # one asset dependency per stage
                refs[key] = stage
        return refs

    def upstream_stages(self) -> list[str]:
        return list(dict.fromkeys(stage for _, stage in self.score_inputs()))

    UNHASHED: ClassVar[frozenset[str]] = frozenset({"batch_size"})  # does not change results

    def hashed_config(self) -> dict[str, Any]:
        config = super().hashed_config()
        if self.length_unit == "words":
            config.pop("tokenizer")  # counting words uses no tokenizer
        return config

    def indicator_names(self) -> list[str]:
        """Indicators this configuration fills (the fit's default terms)."""
        names = ["input_length", "output_length"]
        names += [n for n, on in (("reward", self.reward), ("perplexity", self.perplexity)) if on]
        names.append("mtld")
        names += ["knn"] if self.embedding else []
        return names + [s.label for s in self.extra_scores]

    def check_references(self, stage_kinds: Any, selection_names: set[str]) -> list[tuple[str, str]]:
        problems = [
            *super().check_references(stage_kinds, selection_names),
            *stage_reference_problems("embedding", self.embedding, ("embedding",), stage_kinds, selection_names),
        ]
        if self.perplexity in selection_names and self.perplexity not in stage_kinds:
            problems.append(("perplexity", f"{self.perplexity!r} is a selection, not a stage"))
        kind = stage_kinds.get(self.perplexity) if self.perplexity else None
        if kind is not None and "perplexity" not in kind.column_lineage:
            problems.append(
                ("perplexity", f"{self.perplexity!r} ({kind.kind}) has no perplexity column; name an lm_loss stage")
            )
        if self.reward:
            problems += [("reward", m) for m in self.reward.problems(stage_kinds, selection_names)]
        for i, score in enumerate(self.extra_scores):
            problems += [(f"extra_scores.{i}", m) for m in score.problems(stage_kinds, selection_names)]
        return problems


def length_counter(spec: InstructionMiningIndicatorsSpec) -> Any:
    """texts (pyarrow strings) -> lengths in the configured unit."""
    if spec.length_unit == "words":
        return lambda texts: pc.count_substring_regex(texts, WORD_PATTERN).to_numpy(zero_copy_only=False)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_causal_lm(spec.tokenizer))
    return lambda texts: np.array(
        [len(ids) for ids in tokenizer(texts.to_pylist(), add_special_tokens=False)["input_ids"]]
    )


def run_instruction_mining_indicators(spec: InstructionMiningIndicatorsSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("instruction_mining_indicators", ["instruction", "input", "output"])
    stats: dict[str, Any] = {
        "pending": count,
        "length_unit": spec.length_unit,
        "indicators": spec.indicator_names(),
        "missing": {},
    }
    writer = ctx.rows_writer(INDICATORS_SCHEMA)
    if count:
        pending_ids = pq.read_table(pending, columns=["sample_id"]).column("sample_id").to_pylist()
        upstream = {
            name: aligned_scores(pending_ids, ctx.stage_rows(score.stage, [score.column]), score.column)
            for name, score in _score_columns(spec)
        }
        knn, knn_pool = _knn(spec, ctx, pending_ids, stats) if spec.embedding else (None, None)
        count_lengths = length_counter(spec)
        done = 0
        for chunk in iter_parquet_batches(pending, spec.batch_size):
            rows = slice(done, done + chunk.num_rows)
            done += chunk.num_rows
            prompt = pc.binary_join_element_wise(
                pc.fill_null(chunk.column("instruction"), ""), pc.fill_null(chunk.column("input"), ""), "\n"
            )
            prompt = pc.utf8_rtrim(prompt, "\n")  # no input: the instruction alone
            values: dict[str, np.ndarray] = {
                "input_length": count_lengths(prompt).astype(np.float64),
                "output_length": count_lengths(chunk.column("output")).astype(np.float64),
                "mtld": mtld(mtld_words(chunk.column("output")), spec.mtld_threshold),
            }
            values.update({name: column[rows] for name, column in upstream.items()})
            if knn is not None:
                values["knn"] = knn[rows]
            writer.write(_rows(chunk.column("sample_id"), values, spec, knn_pool))
            for name, column in values.items():
                missing = int(np.isnan(column).sum())
                if missing:
                    stats["missing"][name] = stats["missing"].get(name, 0) + missing
    writer.close()
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)


def _score_columns(spec: InstructionMiningIndicatorsSpec) -> list[tuple[str, ScoreColumn]]:
    columns = [(s.label, s) for s in spec.extra_scores]
    if spec.reward:
        columns.append(("reward", spec.reward))
    if spec.perplexity:
        columns.append(("perplexity", ScoreColumn(stage=spec.perplexity, column="perplexity")))
    return columns


def _knn(
    spec: InstructionMiningIndicatorsSpec, ctx: StageContext, pending_ids: list[str], stats: dict[str, Any]
) -> tuple[np.ndarray, int]:
    """kNN-i of the pending samples among every embedded sample (NaN: the sample has no embedding)."""
    assert spec.embedding is not None
    pool_ids, vectors = ctx.stage_matrix(spec.embedding, "embedding")
    if len(pool_ids) <= spec.knn_k:
        raise ValueError(
            f"{ctx.stage}: kNN-{spec.knn_k} needs more than {spec.knn_k} embedded samples in "
            f"{spec.embedding!r}, it has {len(pool_ids)} (lower `knn_k`)"
        )
    position = pc.index_in(pa.array(pending_ids, pa.string()), value_set=pa.array(pool_ids, pa.string()))
    position = position.to_numpy(zero_copy_only=False).astype(np.float64)
    found = ~np.isnan(position)
    knn = np.full(len(pending_ids), np.nan)
    knn[found] = knn_mean_distance(np.asarray(vectors), position[found].astype(np.int64), spec.knn_k)
    stats["knn_pool"] = len(pool_ids)
    return knn, len(pool_ids)


def _rows(
    sample_ids: pa.Array, values: dict[str, np.ndarray], spec: InstructionMiningIndicatorsSpec, knn_pool: int | None
) -> pa.Table:
    n = len(sample_ids)
    configured = spec.indicator_names()
    missing = [[name for name in configured if np.isnan(values[name][i])] for i in range(n)]

    def column(name: str, kind: pa.DataType) -> pa.Array:
        if name not in values:
            return pa.nulls(n, kind)
        data = values[name]
        return pa.array(
            data if kind == pa.float64() else np.nan_to_num(data).astype(np.int32), type=kind, mask=np.isnan(data)
        )

    labels = [s.label for s in spec.extra_scores]
    extra = [[(label, float(values[label][i])) for label in labels if not np.isnan(values[label][i])] for i in range(n)]
    return pa.table(
        {
            "sample_id": sample_ids,
            "input_length": column("input_length", pa.int32()),
            "output_length": column("output_length", pa.int32()),
            "reward": column("reward", pa.float64()),
            "perplexity": column("perplexity", pa.float64()),
            "mtld": column("mtld", pa.float64()),
            "knn": column("knn", pa.float64()),
            "knn_pool": pa.array([knn_pool] * n, pa.int32()),
            "extra": pa.array(extra, pa.map_(pa.string(), pa.float64()))
            if labels
            else pa.nulls(n, INDICATORS_SCHEMA.field("extra").type),
            "missing": pa.array(missing, pa.list_(pa.string())),
        },
        schema=INDICATORS_SCHEMA,
    )


INSTRUCTION_MINING_INDICATORS = register_kind(
    StageKind(
        kind="instruction_mining_indicators",
        role="stage",
        spec=InstructionMiningIndicatorsSpec,
        run=run_instruction_mining_indicators,
        version="1",
        summary="Instruction Mining indicators per sample: lengths, reward, perplexity, MTLD, kNN-i (Cao et al. 2023).",
        table="instruction_mining_indicators",
        schema_file="schema/stages/instruction_mining.sql",
        rows_schema=INDICATORS_SCHEMA,
        column_lineage={
            "input_length": ("instruction", "input"),
            "output_length": ("output",),
            "reward": ("messages",),
            "perplexity": ("messages",),
            "mtld": ("output",),
            "knn": ("instruction", "input", "output"),
            "knn_pool": ("instruction", "input", "output"),
            # which indicators are NULL (from every sample column above); extra: other stages' rows
            "missing": ("instruction", "input", "output", "messages"),
            "extra": (),
        },
        tags=("python", "numpy", "faiss"),
    )
)
