"""Every write to the store: each runs inside a caller's transaction, from staged Parquet files."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from curation_assets.redact import redact_config
from curation_assets.store.sql_files import execute_sql_file, fetch_row, read_sql


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass
class StageRunRecord:
    """One materialisation, as stored in `stage_runs`."""

    pipeline: str
    stage: str
    kind: str
    config: dict[str, Any]
    config_hash: str
    code_version: str
    dagster_run_id: str | None
    rows_in: int
    rows_out: int
    started_at: dt.datetime
    finished_at: dt.datetime
    device: str = "cpu"
    stats: dict[str, Any] = field(default_factory=dict)
    stage_run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


def insert_stage_run(con: duckdb.DuckDBPyConnection, record: StageRunRecord) -> None:
    """Store one run; URLs in its config and stats lose their user, password and query string."""
    execute_sql_file(
        con,
        "writes/stage_run_insert.sql",
        {
            "stage_run_id": record.stage_run_id,
            "pipeline": record.pipeline,
            "stage": record.stage,
            "kind": record.kind,
            "config": json.dumps(redact_config(record.config), sort_keys=True),
            "config_hash": record.config_hash,
            "code_version": record.code_version,
            "dagster_run_id": record.dagster_run_id,
            "rows_in": record.rows_in,
            "rows_out": record.rows_out,
            "seconds": record.seconds,
            "device": record.device,
            "stats": json.dumps(redact_config(json.loads(json.dumps(record.stats, default=str)))),
            "started_at": record.started_at,
            "finished_at": record.finished_at,
        },
    )


def ingest_deactivations(con: duckdb.DuckDBPyConnection, source: str, counts_file: Path) -> tuple[int, int]:
    """(active samples of `source`, how many of them the staged ingest in `counts_file` would deactivate)."""
    active, deactivated = fetch_row(
        con, read_sql("reads/ingest_deactivations.sql"), {"source": source, "counts_file": str(counts_file)}
    )
    return int(active), int(deactivated or 0)


def merge_ingest(
    con: duckdb.DuckDBPyConnection,
    source: str,
    samples_file: Path,
    counts_file: Path,
    rejected_file: Path,
    guard: Callable[[int, int], None] | None = None,
) -> int:
    """Merge a source's staged files; returns how many samples were new to the store. `guard`
    gets (active samples, how many the merge would deactivate) first and may raise to refuse it."""
    if guard is not None:
        guard(*ingest_deactivations(con, source, counts_file))
    before = fetch_row(con, "SELECT count(*) FROM samples")[0]
    execute_sql_file(
        con,
        "writes/ingest_merge.sql",
        {
            "source": source,
            "samples_file": str(samples_file),
            "counts_file": str(counts_file),
            "rejected_file": str(rejected_file),
            "now": utc_now(),
        },
    )
    execute_sql_file(con, "writes/generated_samples_activity.sql")
    return fetch_row(con, "SELECT count(*) FROM samples")[0] - before


def insert_stage_rows(con: duckdb.DuckDBPyConnection, table: str, stage: str, config_hash: str, rows_file: Path) -> int:
    """Append a stage's staged rows (sample_id + the kind's columns) to its table."""
    column_list = ", ".join(pq_columns(con, rows_file))
    con.execute(
        f"INSERT INTO {table} (stage, config_hash, {column_list}) "  # table/columns come from the kind registry
        f"SELECT $stage, $config_hash, {column_list} FROM read_parquet($rows_file)",
        {"stage": stage, "config_hash": config_hash, "rows_file": str(rows_file)},
    )
    return fetch_row(con, "SELECT count(*) FROM read_parquet($f)", {"f": str(rows_file)})[0]


def replace_selection(con: duckdb.DuckDBPyConnection, selection: str, config_hash: str, members_file: Path) -> int:
    execute_sql_file(
        con,
        "writes/selection_replace.sql",
        {
            "selection": selection,
            "config_hash": config_hash,
            "members_file": str(members_file),
            "now": utc_now(),
        },
    )
    return fetch_row(con, "SELECT count(*) FROM selections WHERE selection = $s", {"s": selection})[0]


def replace_selection_details(con: duckdb.DuckDBPyConnection, selection: str, details_file: Path | None) -> None:
    if details_file is None:
        con.execute("DELETE FROM selection_details WHERE selection = $s", {"s": selection})
        return
    execute_sql_file(
        con, "writes/selection_details_replace.sql", {"selection": selection, "details_file": str(details_file)}
    )


def pq_columns(con: duckdb.DuckDBPyConnection, rows_file: Path) -> list[str]:
    rows = con.execute("DESCRIBE SELECT * FROM read_parquet($f)", {"f": str(rows_file)}).fetchall()
    return [row[0] for row in rows]
