"""A stage's columns are declared three times: the pyarrow schema of the rows its run function stages
(`StageKind.rows_schema`), the DDL of its table (`schema_file`) and its Dagster column lineage
(`column_lineage`). These tests check, for every registered stage kind, that the three agree: the
runner inserts the staged Parquet file by column name, so a column or type that differs would only
show up as a failed or silently cast insert at run time.

The DDL is executed in an in-memory DuckDB and DESCRIBEd; the pyarrow schema is registered as an
empty table in the same DuckDB and DESCRIBEd, so both sides are compared as DuckDB column types.
"""

from __future__ import annotations

import dataclasses

import duckdb
import pyarrow as pa
import pytest

from curation_assets.stages.core.registry import StageKind, all_kinds
from curation_assets.store.sql_files import core_schema_files, execute_sql_file

KEY_COLUMNS = ("stage", "config_hash")  # added by the runner to every staged row (store/writes.py)

STAGE_KINDS = sorted(name for name, kind in all_kinds().items() if kind.role == "stage")


def _describe(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, tuple[str, bool]]:
    """column -> (DuckDB type, nullable), in column order."""
    return {row[0]: (row[1], row[2] == "YES") for row in con.execute(f"DESCRIBE {relation}").fetchall()}


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    """Core tables plus the DDL of every registered kind, in one in-memory database."""
    con = duckdb.connect()
    for relative in core_schema_files():
        execute_sql_file(con, relative)
    for relative in sorted({kind.schema_file for kind in all_kinds().values() if kind.schema_file}):
        execute_sql_file(con, relative)
    return con


def _arrow_columns(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> dict[str, tuple[str, bool]]:
    con.register("staged_rows", pa.Table.from_batches([], schema=schema))
    try:
        return _describe(con, "staged_rows")
    finally:
        con.unregister("staged_rows")


def test_every_stage_kind_is_checked() -> None:
    assert len(STAGE_KINDS) >= 15, STAGE_KINDS  # the registry loaded its built-in kinds


@pytest.mark.parametrize("name", STAGE_KINDS)
def test_stage_declares_table_schema_and_lineage(name: str) -> None:
    kind: StageKind = all_kinds()[name]
    assert kind.table, f"{name}: a stage kind needs `table`"
    assert kind.schema_file, f"{name}: a stage kind needs `schema_file` (the DDL of {kind.table})"
    assert isinstance(kind.rows_schema, pa.Schema), f"{name}: a stage kind needs `rows_schema` (pyarrow)"


def _schema_problems(con: duckdb.DuckDBPyConnection, kind: StageKind) -> list[str]:
    """Where the DDL of `kind.table` and `kind.rows_schema` disagree (empty: they agree). The table is
    stage + config_hash + exactly the staged columns, with the same DuckDB types."""
    assert kind.rows_schema is not None and kind.table is not None
    table = _describe(con, kind.table)
    staged = _arrow_columns(con, kind.rows_schema)
    problems = [] if "sample_id" in staged else ["staged rows have no sample_id column"]
    problems += [
        f"{kind.table}.{key} is not VARCHAR NOT NULL" for key in KEY_COLUMNS if table.get(key) != ("VARCHAR", False)
    ]
    ddl = {column: info[0] for column, info in table.items() if column not in KEY_COLUMNS}
    if set(ddl) - set(staged):
        problems.append(f"columns only in {kind.schema_file}: {sorted(set(ddl) - set(staged))}")
    if set(staged) - set(ddl):
        problems.append(f"columns only in rows_schema: {sorted(set(staged) - set(ddl))}")
    problems += [
        f"{column}: {ddl[column]} in {kind.schema_file}, {staged[column][0]} in rows_schema"
        for column in staged
        if column in ddl and ddl[column] != staged[column][0]
    ]
    return problems


def _lineage_problems(con: duckdb.DuckDBPyConnection, kind: StageKind) -> list[str]:
    """Where `kind.column_lineage` and the table disagree: lineage names every value column
    (`()` for one computed from no sample column) and only `samples` columns as sources."""
    assert kind.table is not None
    value_columns = set(_describe(con, kind.table)) - {*KEY_COLUMNS, "sample_id"}
    problems = []
    if value_columns - set(kind.column_lineage):
        problems.append(f"column_lineage lacks {sorted(value_columns - set(kind.column_lineage))}")
    if set(kind.column_lineage) - value_columns:
        problems.append(
            f"column_lineage names columns {kind.table} lacks: {sorted(set(kind.column_lineage) - value_columns)}"
        )
    samples = set(_describe(con, "samples"))
    problems += [
        f"column_lineage[{column!r}] reads {sorted(set(sources) - samples)}, not columns of `samples`"
        for column, sources in kind.column_lineage.items()
        if set(sources) - samples
    ]
    return problems


@pytest.mark.parametrize("name", STAGE_KINDS)
def test_ddl_matches_rows_schema(name: str, con: duckdb.DuckDBPyConnection) -> None:
    assert _schema_problems(con, all_kinds()[name]) == []


@pytest.mark.parametrize("name", STAGE_KINDS)
def test_column_lineage_matches_ddl(name: str, con: duckdb.DuckDBPyConnection) -> None:
    """What the component emits as `dagster/column_lineage` names the table's columns."""
    assert _lineage_problems(con, all_kinds()[name]) == []


def test_disagreements_are_found(con: duckdb.DuckDBPyConnection) -> None:
    """A changed type, a dropped column and a lineage entry for a column the table lacks are reported."""
    kind = all_kinds()["text_stats"]
    assert kind.rows_schema is not None
    wider = kind.rows_schema.set(kind.rows_schema.get_field_index("n_turns"), pa.field("n_turns", pa.int64()))
    assert _schema_problems(con, dataclasses.replace(kind, rows_schema=wider)) == [
        "n_turns: INTEGER in schema/stages/text_stats.sql, BIGINT in rows_schema"
    ]
    fewer = kind.rows_schema.remove(kind.rows_schema.get_field_index("output_words"))
    assert _schema_problems(con, dataclasses.replace(kind, rows_schema=fewer)) == [
        "columns only in schema/stages/text_stats.sql: ['output_words']"
    ]
    lineage = {**kind.column_lineage, "n_words": ("output",), "n_turns": ("turns",)}
    lineage.pop("input_chars")
    assert _lineage_problems(con, dataclasses.replace(kind, column_lineage=lineage)) == [
        "column_lineage lacks ['input_chars']",
        "column_lineage names columns text_stats lacks: ['n_words']",
        "column_lineage['n_turns'] reads ['turns'], not columns of `samples`",
    ]
