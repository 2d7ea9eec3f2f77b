"""Run a source ingest, stage or selection: compute, then write everything in one transaction.

Dagster-free so the CLI, tests and the Dagster assets share one code path.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from curation_assets.sources.ingest import IngestResult, stage_source
from curation_assets.sources.spec import SourceSpec
from curation_assets.stages.context import StageContext
from curation_assets.stages.registry import StageKind, StageSpec, config_hash
from curation_assets.store import DuckDBStore
from curation_assets.store.writes import (
    StageRunRecord,
    insert_stage_rows,
    insert_stage_run,
    merge_ingest,
    replace_selection,
    replace_selection_details,
    utc_now,
)

INGEST_VERSION = "1"
LOG_EVERY_RECORDS = 5_000


@dataclass
class RunSummary:
    """What one materialisation did; becomes Dagster metadata and a `stage_runs` row."""

    stage: str
    kind: str
    table: str
    config_hash: str
    rows_in: int
    rows_out: int
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def source_config_hash(spec: SourceSpec) -> str:
    return config_hash("source", INGEST_VERSION, spec.model_dump(mode="json", exclude={"name", "description"}))


def run_ingest(spec: SourceSpec, *, pipeline: str, base_dir: Path, store: DuckDBStore,
               dagster_run_id: str | None = None, log: Any = None) -> tuple[RunSummary, IngestResult]:
    started = utc_now()
    with tempfile.TemporaryDirectory(prefix=f"curation-{spec.name}-") as staging:
        with tqdm(desc=f"{spec.name}: records", unit="rec", leave=False) as bar:
            def progress(count: int) -> None:
                bar.update(count)
                if log is not None and bar.n % LOG_EVERY_RECORDS == 0:
                    log.info(f"{spec.name}: {bar.n} records read")

            result = stage_source(spec, base_dir, Path(staging), progress=progress)
        with store.transaction() as con:
            new_samples = merge_ingest(con, spec.name, result.samples_file, result.counts_file,
                                       result.rejected_file, guard=result.check_shrink)
            stats = {**result.stats(), "new_samples": new_samples}
            record = StageRunRecord(
                pipeline=pipeline, stage=spec.name, kind="source", config=spec.model_dump(mode="json"),
                config_hash=source_config_hash(spec), code_version=INGEST_VERSION,
                dagster_run_id=dagster_run_id, rows_in=result.records_read, rows_out=new_samples,
                started_at=started, finished_at=utc_now(), stats=stats,
            )
            insert_stage_run(con, record)
    if log is not None:
        log.info(f"{spec.name}: read {result.records_read} records -> {result.samples} samples "
                 f"({new_samples} new), {result.duplicates} duplicates, {result.rejected} rejected")
    summary = RunSummary(spec.name, "source", "samples", record.config_hash, result.records_read, new_samples,
                         record.seconds, stats)
    return summary, result


def run_stage(kind: StageKind, spec: StageSpec, *, pipeline: str, store: DuckDBStore,
              stage_hashes: Mapping[str, str], stage_tables: Mapping[str, str],
              dagster_run_id: str | None = None, log: Any = None, device: str = "cpu",
              stage_specs: Mapping[str, StageSpec] | None = None,
              shard: tuple[int, int] | None = None) -> RunSummary:
    """Run a stage (appends rows for pending samples) or a selection (replaces its members);
    `shard` (index, count) limits a stage to one shard of the samples."""
    started = utc_now()
    current_hash = stage_hashes.get(spec.name) or kind.config_hash(spec, stage_hashes)
    with tempfile.TemporaryDirectory(prefix=f"curation-{spec.name}-") as staging:
        ctx = StageContext(store=store, pipeline=pipeline, stage=spec.name, config_hash=current_hash,
                           staging_dir=Path(staging), stage_hashes=stage_hashes, stage_tables=stage_tables,
                           input_selection=spec.input_selection, originals_only=kind.generates_samples,
                           stage_specs=dict(stage_specs or {}), shard=shard,
                           **({"log": log} if log is not None else {}))
        output = kind.run(spec, ctx)
        if shard is not None:
            output.stats["shard"] = f"{shard[0]}/{shard[1]}"
        with store.transaction() as con:
            if kind.role == "stage":
                assert kind.table is not None
                rows_out = insert_stage_rows(con, kind.table, spec.name, current_hash, output.rows_file)
            else:
                rows_out = replace_selection(con, spec.name, current_hash, output.rows_file)
                replace_selection_details(con, spec.name, output.details_file)
            if kind.write_extra is not None:
                kind.write_extra(con, spec.name, current_hash, output)
            record = StageRunRecord(
                pipeline=pipeline, stage=spec.name, kind=kind.kind, config=spec.model_dump(mode="json"),
                config_hash=current_hash, code_version=kind.version, dagster_run_id=dagster_run_id,
                rows_in=output.rows_in, rows_out=rows_out, started_at=started, finished_at=utc_now(),
                device=device, stats=output.stats,
            )
            insert_stage_run(con, record)
        if ctx.partial_dir.exists():  # committed: an interrupted run's parts are not needed any more
            shutil.rmtree(ctx.partial_dir)
    table = kind.table if kind.role == "stage" else "selections"
    return RunSummary(spec.name, kind.kind, table or "", current_hash, output.rows_in, rows_out,
                      record.seconds, output.stats, output.metadata)
