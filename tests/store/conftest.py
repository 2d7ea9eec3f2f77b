"""Fixtures of the DuckLake store tests: one PostgreSQL server per module, a fresh catalog per test.
Only requested by modules that have already skipped where DuckLake or PostgreSQL is missing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from curation_assets.store.sql_files import SQL_DIR
from tests.support.postgres import PostgresServer, postgres_server

STAGE_FILES = sorted(f"schema/stages/{p.name}" for p in (SQL_DIR / "schema" / "stages").glob("*.sql"))


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture
def lake_args(pg: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A fresh catalog database per test; the password only in the variable the store names."""
    monkeypatch.setenv(pg.password_env, pg.password)
    return {
        "catalog": pg.new_catalog(f"t_{uuid.uuid4().hex[:12]}"),
        "data_path": str(tmp_path / "lake_data"),
        "work_path": str(tmp_path / "work"),
        "password_env": pg.password_env,
        "lock_timeout_s": 120.0,
    }


@pytest.fixture
def lake(lake_args: dict):
    from curation_assets.store.ducklake_store import DuckLakeStore

    store = DuckLakeStore(**lake_args)
    store.ensure_schema(STAGE_FILES)
    return store
