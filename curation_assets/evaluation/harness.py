"""Run an evaluation: every baseline and selection fine-tuned with one recipe, measured on the
held-out target and general sets, compared with the baselines' band (issue #9).

Dagster-free, so the asset, the CLI and the tests share it: reads members and timings from
the store, fine-tunes through the on-disk cache, writes `evaluation_results` in one short
transaction and, with `output_dir`, eval.md and eval.png.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation_assets.evaluation.finetune import FinetuneRunner, Measured
from curation_assets.evaluation.finetune_cache import FinetuneCache, finetune_key, members_hash
from curation_assets.evaluation.heldout import HeldoutSet, check_no_leak, general_heldout, target_heldout
from curation_assets.evaluation.spec import EvaluationSpec
from curation_assets.stages.registry import StageSpec
from curation_assets.store import DuckDBStore
from curation_assets.store.sql_files import execute_sql_file, read_sql
from curation_assets.store.writes import utc_now

BASE_MODEL = "base_model"
RESULT_SCHEMA = pa.schema([
    ("evaluation", pa.string()), ("selection", pa.string()), ("kind", pa.string()), ("role", pa.string()),
    ("k", pa.int32()), ("members_hash", pa.string()), ("finetune_key", pa.string()),
    ("target_loss", pa.float64()), ("general_loss", pa.float64()), ("target_delta", pa.float64()),
    ("general_delta", pa.float64()), ("selection_seconds", pa.float64()), ("upstream_seconds", pa.float64()),
    ("finetune_seconds", pa.float64()), ("eval_seconds", pa.float64()), ("computed_now", pa.bool_()),
    ("training_steps", pa.int32()), ("final_training_loss", pa.float64()), ("config_hash", pa.string()),
    ("evaluated_at", pa.timestamp("us")),
])

SAMPLES_SCHEMA = pa.schema([
    ("evaluation", pa.string()), ("heldout_set", pa.string()), ("position", pa.int32()), ("sample_id", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
])


@dataclass
class ResultRow:
    selection: str
    kind: str
    role: str  # method | baseline | base_model
    k: int
    measured: Measured
    members_hash: str | None = None
    target_loss: float = float("nan")
    general_loss: float = float("nan")
    target_delta: float | None = None
    general_delta: float | None = None
    selection_seconds: float | None = None
    upstream_seconds: float | None = None


@dataclass
class Band:
    """Mean and sample standard deviation (ddof = 1) of the baselines' losses."""

    target_mean: float
    target_std: float
    general_mean: float
    general_std: float
    n: int


@dataclass
class EvaluationResult:
    spec: EvaluationSpec
    rows: list[ResultRow]
    band: Band
    target: HeldoutSet
    general: HeldoutSet
    pool_size: int
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    machine: str = ""
    stage_timings: list[tuple[str, str, float]] = field(default_factory=list)  # (name, kind, seconds)

    def row(self, selection: str) -> ResultRow:
        return next(r for r in self.rows if r.selection == selection)


def machine_description() -> str:
    from curation_assets.models.device import compute_device

    return f"{platform.machine()}, {os.cpu_count()} cores, torch device {compute_device().describe()}"


def selection_members(store: DuckDBStore, selection: str, current_hash: str) -> list[str]:
    with store.reader() as con:
        rows = con.execute(read_sql("reads/evaluation_members.sql"), {"selection": selection}).fetchall()
    if not rows:
        raise ValueError(f"evaluation: selection {selection!r} has no members: materialise it first")
    stale = {config for _, config in rows if config != current_hash}
    if stale:
        raise ValueError(f"evaluation: selection {selection!r} was selected under config {sorted(stale)}, not its "
                         f"current config {current_hash}: materialise it again")
    return [sid for sid, _ in rows]


def member_messages(store: DuckDBStore, sample_ids: list[str]) -> list[Any]:
    """Conversations of `sample_ids`, in sample_id order."""
    with store.reader() as con:
        rows = con.execute(read_sql("reads/sample_messages.sql"), {"sample_ids": sample_ids}).fetchall()
    return [messages for _, messages in rows]


def upstream_names(name: str, specs: Mapping[str, StageSpec]) -> list[str]:
    """Every stage and selection `name` reads, directly or through others (sources excluded)."""
    seen: list[str] = []
    stack = list(specs[name].references().values())
    while stack:
        ref = stack.pop()
        if ref in specs and ref not in seen:
            seen.append(ref)
            stack.extend(specs[ref].references().values())
    return seen


def stage_seconds(store: DuckDBStore, pipeline: str, name: str, config_hash: str, role: str) -> float:
    """A stage: every run of its current config (incremental); a selection: its latest run."""
    with store.reader() as con:
        if role == "stage":
            return float(con.execute(read_sql("reads/evaluation_stage_seconds.sql"),
                                     {"pipeline": pipeline, "stage": name, "config_hash": config_hash}
                                     ).fetchall()[0][0])
        rows = con.execute(read_sql("reads/evaluation_selection_seconds.sql"),
                           {"pipeline": pipeline, "stage": name, "config_hash": config_hash}).fetchall()
    return float(rows[0][0]) if rows else 0.0


def run_evaluation(spec: EvaluationSpec, *, store: DuckDBStore, pipeline: str, specs: Mapping[str, StageSpec],
                   selection_names: set[str], stage_hashes: Mapping[str, str], cache_dir: Path,
                   log: Any = None) -> EvaluationResult:
    """Fine-tune and measure every listed selection (cached), write `evaluation_results` and the files."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="curation-evaluation-") as staging:
        target = target_heldout(spec.target, spec.target_heldout_size, Path(staging))
        general = general_heldout(spec.general, store, Path(staging))
    check_no_leak(store, target, sorted(selection_names))
    runner = FinetuneRunner(spec.finetune, FinetuneCache(cache_dir), [target, general], log)
    rows = [ResultRow(BASE_MODEL, "none", "base_model", 0, runner.base_model())]
    for role, names in (("baseline", spec.baselines), ("method", spec.selections)):
        for name in names:
            members = selection_members(store, name, stage_hashes[name])
            training_set = members_hash(members)
            key = finetune_key(training_set, spec.finetune)
            if log is not None:
                log.info(f"evaluation: {name} ({len(members)} samples)")
            measured = runner.finetuned(key, member_messages(store, members))
            row = ResultRow(name, specs[name].kind, role, len(members), measured, training_set)
            row.selection_seconds = stage_seconds(store, pipeline, name, stage_hashes[name], "selection")
            row.upstream_seconds = row.selection_seconds + sum(
                stage_seconds(store, pipeline, ref, stage_hashes[ref],
                              "selection" if ref in selection_names else "stage")
                for ref in upstream_names(name, specs))
            rows.append(row)
    for row in rows:
        row.target_loss = row.measured.mean(target.name)
        row.general_loss = row.measured.mean(general.name)
    baselines = [r for r in rows if r.role == "baseline"]
    band = Band(*_mean_std([r.target_loss for r in baselines]), *_mean_std([r.general_loss for r in baselines]),
                len(baselines))
    for row in rows:
        row.target_delta = row.target_loss - band.target_mean
        row.general_delta = row.general_loss - band.general_mean
    with store.reader() as con:
        pool = con.execute("SELECT count(*) FROM samples WHERE active").fetchall()[0][0]
    timings = [(name, stage.kind, stage_seconds(store, pipeline, name, stage_hashes[name],
                                                "selection" if name in selection_names else "stage"))
               for name, stage in specs.items()]
    result = EvaluationResult(spec, rows, band, target, general, int(pool), time.perf_counter() - started,
                              dict(runner.stats), machine_description(), timings)
    write_results(store, result)
    if spec.output_dir:
        from curation_assets.evaluation.report import write_report_files

        write_report_files(result, Path(spec.output_dir))
    return result


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else float("nan")


def write_results(store: DuckDBStore, result: EvaluationResult) -> None:
    now = utc_now()
    records = [{
        "evaluation": result.spec.name, "selection": r.selection, "kind": r.kind, "role": r.role, "k": r.k,
        "members_hash": r.members_hash, "finetune_key": r.measured.key, "target_loss": _finite(r.target_loss),
        "general_loss": _finite(r.general_loss), "target_delta": _finite(r.target_delta),
        "general_delta": _finite(r.general_delta), "selection_seconds": r.selection_seconds,
        "upstream_seconds": r.upstream_seconds, "finetune_seconds": r.measured.finetune_seconds,
        "eval_seconds": r.measured.eval_seconds, "computed_now": r.measured.computed_now,
        "training_steps": r.measured.training_steps, "final_training_loss": r.measured.final_training_loss,
        "config_hash": result.spec.config_hash(), "evaluated_at": now} for r in result.rows]
    heldout = [{"evaluation": result.spec.name, "heldout_set": held.name, "position": i, "sample_id": sid,
                "messages": messages}
               for held in (result.target, result.general)
               for i, (sid, messages) in enumerate(zip(held.sample_ids, held.messages))]
    with tempfile.TemporaryDirectory(prefix="curation-evaluation-") as staging:
        path, samples_path = Path(staging) / "results.parquet", Path(staging) / "samples.parquet"
        pq.write_table(pa.Table.from_pylist(records, schema=RESULT_SCHEMA), path)
        pq.write_table(pa.Table.from_pylist(heldout, schema=SAMPLES_SCHEMA), samples_path)
        with store.transaction() as con:
            execute_sql_file(con, "writes/evaluation_replace.sql", {
                "evaluation": result.spec.name, "results_file": str(path), "samples_file": str(samples_path)})


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
