"""The store protocol: where a pipeline's tables live (issue #22, docs/deployment.md "Shared store").

SHARED INTERFACE: `Store` below is implemented by `DuckDBStore` (duckdb_store.py, one DuckDB
file, the default) and `DuckLakeStore` (ducklake_store.py, a DuckLake catalog in PostgreSQL with
Parquet data files; another author). Change a member here only together with both.

Callers (stages/core/runner.py and context.py, components/, export.py, cli.py) use only these
members; `DuckDBStore.path` stays for the few that truly need the file (the query sandbox, CLI
messages).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import duckdb


@runtime_checkable
class Store(Protocol):
    """One pipeline's tables, views and rows, whatever holds them.

    Every table, view, stage row, selection, LLM cache entry and `stage_runs` row is written through
    `transaction()` and read through `reader()`, with the SQL of sql/ (unqualified table names).
    """

    kind: str
    """The `store:` block's kind: "duckdb" or "ducklake"."""

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection whose unqualified table names resolve to the store; the caller closes it.
        `read_only` connections never write (a missing store is a FileNotFoundError naming it)."""
        ...

    def reader(self, *, read_only: bool = False) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """`connect()` for a `with` block: closed afterwards."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """One write transaction: committed when the block ends, rolled back on any error. A store
        whose commits can conflict with another writer's (DuckLake) runs the block again, so the
        block must be re-runnable (writes come from staged Parquet files)."""
        ...

    def ensure_schema(self, extra_schema_files: Iterable[str] = ()) -> None:
        """Apply the core DDL (sql/schema), each stage kind's DDL (`extra_schema_files`, paths under
        sql/) and the static views; idempotent."""
        ...

    def describe(self) -> str:
        """What messages and metadata show: the file path, or `ducklake:<catalog without password>
        data <data_path>`; never a secret."""
        ...

    @property
    def work_dir(self) -> Path:
        """Local or shared folder for staging folders, stage/ingest lock files and artefacts (LoRA
        checkpoints, trained scorers); every worker writing the store must see the same folder.
        For a DuckDB file: `<folder of the file>/<file stem>.artifacts`."""
        ...

    def protected_paths(self) -> list[Path]:
        """Paths no export may replace, hold or write into (the file, its WAL, `work_dir`, a local
        data folder)."""
        ...

    def exists(self) -> bool:
        """Whether anything has been written to the store yet (False: readers may skip it)."""
        ...

    def query_connection(self) -> duckdb.DuckDBPyConnection:
        """A connection for `curation query`'s sandbox, before its settings are applied: read-only
        on a DuckDB file; for DuckLake the lake attached (and `USE`d) already, since attaching is
        refused once `enable_external_access = false` is set. The caller closes it."""
        ...


def artifacts_folder(db_path: Path) -> Path:
    """`<db stem>.artifacts` beside a DuckDB file: the duckdb kind's `work_dir` (unchanged since
    the first stores, so existing checkpoints and scorers stay where they are)."""
    return db_path.parent / f"{db_path.stem}.artifacts"
