"""SQL text lives in the project's sql/ folder; this module finds and reads it by name."""

from __future__ import annotations

from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


def sql_path(relative: str) -> Path:
    path = SQL_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(f"SQL file not found: {path}")
    return path


@cache
def read_sql(relative: str) -> str:
    """Text of sql/<relative>, e.g. read_sql("schema/001_core.sql")."""
    return sql_path(relative).read_text(encoding="utf-8")


def core_schema_files() -> list[str]:
    return sorted(f"schema/{p.name}" for p in (SQL_DIR / "schema").glob("*.sql"))


def static_view_files() -> list[str]:
    return sorted(f"views/static/{p.name}" for p in (SQL_DIR / "views" / "static").glob("*.sql"))


def execute_sql_file(con, relative: str, params: dict | None = None) -> None:
    """Run every statement of sql/<relative>, giving each the named parameters it uses."""
    import duckdb

    params = params or {}
    for statement in duckdb.extract_statements(read_sql(relative)):
        wanted = statement.named_parameters
        missing = wanted - params.keys()
        if missing:
            raise KeyError(f"{relative}: no value for parameters {sorted(missing)}")
        con.execute(statement, {k: params[k] for k in wanted} if wanted else None)


def fetch_row(con, sql: str, params: dict | None = None) -> tuple:
    """First row of a query, fully consuming the result (DuckDB 2 refuses new work on an unfinished one)."""
    rows = con.execute(sql, params).fetchall() if params else con.execute(sql).fetchall()
    if not rows:
        raise LookupError(f"query returned no rows: {sql[:80]}")
    return rows[0]
