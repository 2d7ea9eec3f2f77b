"""Run a source ingest, stage or selection: compute, then write everything in one transaction.

Each run holds its stage's lock (stage, config and shard; a source's ingest lock) while it
computes, so two runs started at once (CLI and daemon, two pods) never both compute: the
second waits, then skips what the first committed (see run_guard.py). Dagster-free so the
CLI, tests and the Dagster assets share one code path.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from curation_assets.sources.ingest import IngestResult, resolve_source_location, stage_source
from curation_assets.sources.spec import SourceSpec
from curation_assets.stages.core.context import StageContext
from curation_assets.stages.core.registry import StageKind, StageSpec, config_hash
from curation_assets.stages.core.run_guard import (
    exclusive_run,
    ingest_lock_path,
    stage_lock_path,
    staging_folder,
)
from curation_assets.store import Store
from curation_assets.store.sql_files import fetch_row, read_sql
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


def run_ingest(
    spec: SourceSpec,
    *,
    pipeline: str,
    base_dir: Path,
    store: Store,
    dagster_run_id: str | None = None,
    log: Any = None,
) -> tuple[RunSummary, IngestResult]:
    """Read, normalise and merge a source; a run that waited while another ingested the same
    unchanged file reuses that ingest instead of reading the file again."""
    source_hash = source_config_hash(spec)
    location = resolve_source_location(spec, base_dir)
    with exclusive_run(
        ingest_lock_path(store.work_dir, spec.name),
        f"ingest of {spec.name}",
        lambda: _committed_runs(store, spec.name, source_hash, None),
        log,
    ) as done_meanwhile:
        if done_meanwhile:
            skipped = _ingest_done_meanwhile(store, spec, source_hash, location)
            if skipped is not None:
                return skipped
        return _run_ingest(
            spec,
            source_hash,
            location,
            pipeline=pipeline,
            base_dir=base_dir,
            store=store,
            dagster_run_id=dagster_run_id,
            log=log,
        )


def _run_ingest(
    spec: SourceSpec,
    source_hash: str,
    location: str,
    *,
    pipeline: str,
    base_dir: Path,
    store: Store,
    dagster_run_id: str | None,
    log: Any,
) -> tuple[RunSummary, IngestResult]:
    started = utc_now()
    source_stat = _file_stat(location)
    with staging_folder(store.work_dir, f"ingest-{spec.name}") as staging:
        with tqdm(desc=f"{spec.name}: records", unit="rec", leave=False) as bar:

            def progress(count: int) -> None:
                bar.update(count)
                if log is not None and bar.n % LOG_EVERY_RECORDS == 0:
                    log.info(f"{spec.name}: {bar.n} records read")

            result = stage_source(spec, base_dir, Path(staging), progress=progress)
        # stage_source sets all three files (None only on an IngestResult not yet staged)
        assert result.samples_file and result.counts_file and result.rejected_file
        with store.transaction() as con:
            new_samples = merge_ingest(
                con, spec.name, result.samples_file, result.counts_file, result.rejected_file, guard=result.check_shrink
            )
            stats = {**result.stats(), "new_samples": new_samples, "source_stat": source_stat}
            record = StageRunRecord(
                pipeline=pipeline,
                stage=spec.name,
                kind="source",
                config=spec.model_dump(mode="json"),
                config_hash=source_hash,
                code_version=INGEST_VERSION,
                dagster_run_id=dagster_run_id,
                rows_in=result.records_read,
                rows_out=new_samples,
                started_at=started,
                finished_at=utc_now(),
                stats=stats,
            )
            insert_stage_run(con, record)
    if log is not None:
        log.info(
            f"{spec.name}: read {result.records_read} records -> {result.samples} samples "
            f"({new_samples} new), {result.duplicates} duplicates, {result.rejected} rejected"
        )
    summary = RunSummary(
        spec.name, "source", "samples", record.config_hash, result.records_read, new_samples, record.seconds, stats
    )
    return summary, result


def run_stage(
    kind: StageKind,
    spec: StageSpec,
    *,
    pipeline: str,
    store: Store,
    stage_hashes: Mapping[str, str],
    stage_tables: Mapping[str, str],
    dagster_run_id: str | None = None,
    log: Any = None,
    device: str | None = None,
    stage_specs: Mapping[str, StageSpec] | None = None,
    shard: tuple[int, int] | None = None,
) -> RunSummary:
    """Run a stage (appends rows for pending samples) or a selection (replaces its members);
    `shard` (index, count) limits a stage to one shard of the samples; `device` (what `stage_runs`
    records) defaults to `stage_device(kind)`. A run that waited for
    another run of the same stage, config and shard computes only what that run did not commit:
    a stage's remaining pending samples; nothing for a selection that run committed."""
    current_hash = stage_hashes.get(spec.name) or kind.config_hash(spec, stage_hashes)
    what = spec.name + ("" if shard is None else f" shard {shard[0]}/{shard[1]}")
    # A stage needs no check: its pending samples exclude the rows the other run committed. A
    # selection is recomputed whole, so it is skipped when a run of it committed while this one waited.
    committed = None if kind.role == "stage" else (lambda: _committed_runs(store, spec.name, current_hash, None))
    with exclusive_run(
        stage_lock_path(store.work_dir, spec.name, current_hash, shard), what, committed, log
    ) as done_meanwhile:
        if done_meanwhile:
            return RunSummary(
                spec.name,
                kind.kind,
                "selections",
                current_hash,
                0,
                0,
                0.0,
                {"skipped": "committed by a concurrent run"},
            )
        return _run_stage(
            kind,
            spec,
            current_hash,
            pipeline=pipeline,
            store=store,
            stage_hashes=stage_hashes,
            stage_tables=stage_tables,
            dagster_run_id=dagster_run_id,
            log=log,
            device=device or stage_device(kind),
            stage_specs=stage_specs,
            shard=shard,
        )


MODEL_TAGS = frozenset({"torch", "sentence_transformers", "transformers", "peft"})


def stage_device(kind: StageKind) -> str:
    """What `stage_runs.device` records: the torch device and dtype (`cuda/bfloat16/16t`) for a kind
    whose Dagster kinds name a model library, else "cpu" (numpy, faiss, SQL and HTTP kinds)."""
    if MODEL_TAGS.isdisjoint(kind.tags):
        return "cpu"
    from curation_assets.models.device import compute_device

    return compute_device().describe()


def _run_stage(
    kind: StageKind,
    spec: StageSpec,
    current_hash: str,
    *,
    pipeline: str,
    store: Store,
    stage_hashes: Mapping[str, str],
    stage_tables: Mapping[str, str],
    dagster_run_id: str | None,
    log: Any,
    device: str,
    stage_specs: Mapping[str, StageSpec] | None,
    shard: tuple[int, int] | None,
) -> RunSummary:
    started = utc_now()
    with staging_folder(store.work_dir, spec.name) as staging:
        ctx = StageContext(
            store=store,
            pipeline=pipeline,
            stage=spec.name,
            config_hash=current_hash,
            staging_dir=staging,
            stage_hashes=stage_hashes,
            stage_tables=stage_tables,
            input_selection=spec.input_selection,
            originals_only=kind.generates_samples,
            stage_specs=dict(stage_specs or {}),
            shard=shard,
            **({"log": log} if log is not None else {}),
        )
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
                pipeline=pipeline,
                stage=spec.name,
                kind=kind.kind,
                config=spec.model_dump(mode="json"),
                config_hash=current_hash,
                code_version=kind.version,
                dagster_run_id=dagster_run_id,
                rows_in=output.rows_in,
                rows_out=rows_out,
                started_at=started,
                finished_at=utc_now(),
                device=device,
                stats=output.stats,
            )
            insert_stage_run(con, record)
        if ctx.partial_dir.exists():  # committed: an interrupted run's parts are not needed any more
            shutil.rmtree(ctx.partial_dir)
    table = kind.table if kind.role == "stage" else "selections"
    return RunSummary(
        spec.name,
        kind.kind,
        table or "",
        current_hash,
        output.rows_in,
        rows_out,
        record.seconds,
        output.stats,
        output.metadata,
    )


def _committed_runs(store: Store, stage: str, config_hash: str, shard: str | None) -> int:
    """How many runs of this stage (or source), config and shard are in `stage_runs` (read only
    when another run holds the lock)."""
    if not store.exists():
        return 0
    with store.reader() as con:
        return fetch_row(
            con,
            read_sql("reads/committed_runs.sql"),
            {"stage": stage, "config_hash": config_hash, "shard": shard or ""},
        )[0]


def _file_stat(location: str) -> str | None:
    """Size and mtime of a source file: whether it changed since another run read it."""
    path = Path(location)
    if not path.is_file():
        return None
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _ingest_done_meanwhile(
    store: Store, spec: SourceSpec, source_hash: str, location: str
) -> tuple[RunSummary, IngestResult] | None:
    """The ingest another run committed while this one waited, when it read the file as it is now
    (same size and mtime); None otherwise (a folder, a hub dataset, or a file changed since)."""
    current = _file_stat(location)
    if current is None:
        return None
    with store.reader() as con:
        row = con.execute(
            read_sql("reads/latest_ingest_run.sql"), {"stage": spec.name, "config_hash": source_hash}
        ).fetchone()
    if row is None:
        return None
    stats = json.loads(row[0])
    if stats.get("source_stat") != current:
        return None
    result = IngestResult(
        source=spec.name,
        source_file=stats["source_file"],
        records_read=stats["records_read"],
        samples=stats["samples"],
        duplicates=stats["duplicates"],
        rejected=stats["rejected"],
        reject_reasons=dict(stats.get("reject_reasons") or {}),
    )
    summary = RunSummary(
        spec.name,
        "source",
        "samples",
        source_hash,
        0,
        0,
        0.0,
        {**result.stats(), "skipped": "ingested by a concurrent run"},
    )
    return summary, result
