"""`ducklake_ddl`: the project's DDL without what DuckLake refuses (PRIMARY KEY/UNIQUE, fixed-size
ARRAY types). Pure text, so it runs in every environment; the DDL's effect on a real lake is in
test_ducklake_store.py."""

from __future__ import annotations

import duckdb

from curation_assets.store.ducklake_store import ducklake_ddl
from curation_assets.store.sql_files import SQL_DIR


def test_keys_and_fixed_arrays_are_removed_and_nothing_else() -> None:
    ddl = """-- a comment naming a PRIMARY KEY and FLOAT[384]
CREATE TABLE IF NOT EXISTS t (
    id        VARCHAR PRIMARY KEY,  -- trailing comment
    code      VARCHAR NOT NULL UNIQUE,
    emb       FLOAT[384],
    tags      VARCHAR[],
    grid      DOUBLE[3][4],
    unique_id VARCHAR,
    n         INTEGER[2],
    pk_part   BIGINT,
    PRIMARY KEY (id, pk_part),
    UNIQUE (code)
);"""
    expected = """
CREATE TABLE IF NOT EXISTS t (
    id        VARCHAR NOT NULL,
    code      VARCHAR NOT NULL,
    emb       FLOAT[],
    tags      VARCHAR[],
    grid      DOUBLE[][],
    unique_id VARCHAR,
    n         INTEGER[],
    pk_part   BIGINT NOT NULL
);"""
    assert ducklake_ddl(ddl) == expected


def test_every_project_schema_file_parses_without_keys() -> None:
    files = sorted((SQL_DIR / "schema").rglob("*.sql"))
    assert len(files) > 20
    for path in files:
        original = path.read_text(encoding="utf-8")
        text = ducklake_ddl(original)
        statements = duckdb.extract_statements(text)
        assert len(statements) == len(duckdb.extract_statements(original)), path
        for statement in statements:
            upper = statement.query.upper()
            assert "PRIMARY KEY" not in upper and " UNIQUE" not in upper, (path, statement.query)


def test_only_statements_that_cannot_read_the_lake_are_appends() -> None:
    from curation_assets.store.ducklake_store import is_append

    appends = [
        "INSERT INTO text_stats (stage, config_hash, a) SELECT $stage, $config_hash, a FROM read_parquet($rows_file)",
        "INSERT INTO stage_runs VALUES ($id, $config::JSON)",
        "-- a comment\nSELECT count(*) FROM read_parquet($f)",
        "DESCRIBE SELECT * FROM read_parquet($f)",
        "INSERT INTO llm_failures SELECT * FROM new_llm_failures",  # a registered Arrow table
    ]
    not_appends = [
        "INSERT INTO samples SELECT s.* FROM read_parquet($f) AS s ANTI JOIN samples AS e ON e.id = s.id",
        "INSERT INTO t SELECT * FROM read_parquet($f) WHERE id NOT IN (SELECT id FROM t)",
        "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
        "INSERT INTO t SELECT * FROM other_table",
        "SELECT count(*) FROM samples",
        "DELETE FROM selections WHERE selection = $s",
        "UPDATE samples SET active = FALSE",
        "MERGE INTO t USING (SELECT 1 AS id) AS s USING (id) WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)",
        "CREATE TABLE IF NOT EXISTS t (a INTEGER)",
        "CREATE OR REPLACE VIEW v AS SELECT * FROM t",
    ]
    assert [is_append(q, {"new_llm_failures"}) for q in appends] == [True] * len(appends)
    assert [is_append(q, {"new_llm_failures"}) for q in not_appends] == [False] * len(not_appends)


def test_a_store_outside_the_ducklake_environment_names_make_setup_ducklake(monkeypatch, tmp_path) -> None:
    import pytest

    from curation_assets.store.config import StoreUnavailableError
    from curation_assets.store.ducklake_store import DuckLakeStore

    monkeypatch.setattr(duckdb, "__version__", "2.0.0")  # as in the main environment
    with pytest.raises(StoreUnavailableError, match="make setup-ducklake") as caught:
        DuckLakeStore(catalog="postgres:dbname=x", data_path=tmp_path / "d", work_path=tmp_path / "w")
    assert "duckdb==1.5.5" in str(caught.value)
