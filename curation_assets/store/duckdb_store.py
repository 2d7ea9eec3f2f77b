"""The DuckDB file of a pipeline: connections with lock retry, schema, one-transaction writes.

DuckDB lets one process write a file at a time. Stages compute outside any connection
and write in one short transaction, so a killed run leaves the previous state intact
and a second process waits only for the write (docs/deployment.md: locks, parts, staging).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb

from curation_assets.store.base import artifacts_folder
from curation_assets.store.sql_files import core_schema_files, execute_sql_file, static_view_files

_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")


class StoreLockedError(RuntimeError):
    """Another process holds the DuckDB file for writing longer than we are willing to wait."""


class DuckDBStore:
    """Access to one pipeline's DuckDB file (the `duckdb` kind of the `Store` protocol, store/base.py)."""

    kind = "duckdb"

    def __init__(self, path: str | Path, *, lock_timeout_s: float = 120.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    def describe(self) -> str:
        return str(self.path)

    @property
    def work_dir(self) -> Path:
        return artifacts_folder(self.path)

    def protected_paths(self) -> list[Path]:
        """The file, what DuckDB keeps beside it (WAL, spill folder) and the stages' artefact folder."""
        db = self.path
        return [db, db.with_name(db.name + ".wal"), db.with_name(db.name + ".tmp"), self.work_dir]

    def exists(self) -> bool:
        return self.path.exists()

    def query_connection(self) -> duckdb.DuckDBPyConnection:
        return self.connect(read_only=True)

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """Open a connection, retrying with backoff while another process holds the lock."""
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise FileNotFoundError(f"no DuckDB file at {self.path}: run the pipeline first")
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as err:
                if not any(marker in str(err) for marker in _LOCK_MARKERS):
                    raise
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"{self.path} is locked by another process (a run writing?) and stayed locked "
                        f"for {self.lock_timeout_s:.0f} s: {err}"
                    ) from err
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 2.0)

    @contextlib.contextmanager
    def reader(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.connect(read_only=read_only)
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction: committed on success, rolled back on any error."""
        con = self.connect()
        try:
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()
        finally:
            con.close()

    def ensure_schema(self, extra_schema_files: Iterable[str] = ()) -> None:
        """Apply the core DDL, each stage kind's DDL and the static views; every statement is idempotent."""
        with self.transaction() as con:
            for relative in [*core_schema_files(), *extra_schema_files, *static_view_files()]:
                execute_sql_file(con, relative)
