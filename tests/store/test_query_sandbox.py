"""`curation query` is a sandbox (issue #18, item 2): the DuckDB file's tables and views, nothing else.

DuckDB enforces it (enable_external_access=false, no extension auto-install/auto-load,
lock_configuration); ATTACH and INSTALL/LOAD are refused by statement type as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from curation_assets.cli import main
from tests.support.files import valid_pipeline_yaml, write_pipeline


def query(db: Path, sql: str, *options: str) -> object:
    return CliRunner().invoke(
        main, ["query", sql, "--db", str(db), "--format", "json", *options], catch_exceptions=False
    )


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sandbox")
    yaml_file = write_pipeline(root / "pipe", valid_pipeline_yaml(), records=12)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = CliRunner().invoke(main, ["run", str(yaml_file)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("token\nhunter2\n")
    return {"db": yaml_file.parent / "tiny.duckdb", "outside": outside, "root": root}


def refused(result: object, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


# ---- refused ------------------------------------------------------------------------------------


def test_copy_to_a_file_is_refused(pipe: dict) -> None:
    target = pipe["outside"] / "dump.csv"
    refused(query(pipe["db"], f"COPY (SELECT * FROM samples) TO '{target}'"), "sandbox", "--allow-files")
    refused(query(pipe["db"], f"EXPORT DATABASE '{pipe['outside'] / 'dump'}'"), "sandbox")
    assert not target.exists() and not (pipe["outside"] / "dump").exists()


@pytest.mark.parametrize(
    "reader", ["read_text('{f}')", "read_csv('{f}')", "'{f}'", "read_blob('{f}')", "glob('{d}/*')"]
)
def test_reading_an_outside_file_is_refused(pipe: dict, reader: str) -> None:
    source = reader.format(f=pipe["outside"] / "secret.csv", d=pipe["outside"])
    refused(query(pipe["db"], f"SELECT * FROM {source}"), "sandbox", "disabled by configuration")


def test_reading_a_system_file_is_refused(pipe: dict) -> None:
    refused(query(pipe["db"], "SELECT * FROM read_text('/etc/hostname')"), "sandbox")


@pytest.mark.parametrize(
    "statement", ["ATTACH '{d}/other.duckdb' AS other", "ATTACH ':memory:' AS scratch", "DETACH tiny"]
)
def test_attach_is_refused(pipe: dict, statement: str) -> None:
    refused(query(pipe["db"], statement.format(d=pipe["outside"])), "refuses")
    assert not (pipe["outside"] / "other.duckdb").exists()


@pytest.mark.parametrize("statement", ["INSTALL httpfs", "FORCE INSTALL httpfs", "LOAD httpfs", "LOAD json"])
def test_extensions_are_refused(pipe: dict, statement: str) -> None:
    refused(query(pipe["db"], statement), "refuses INSTALL/LOAD")


@pytest.mark.parametrize(
    "statement",
    [
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "SET lock_configuration = false",
        "SET autoload_known_extensions = true",
        "SET memory_limit = '1GB'",
    ],
)
def test_settings_are_locked(pipe: dict, statement: str) -> None:
    refused(query(pipe["db"], statement), "does not change settings", "locked")


@pytest.mark.parametrize(
    "statement",
    [
        "PRAGMA enable_profiling",
        "PRAGMA disable_profiling",
        "PRAGMA enable_profiling = 'json'",
        "PRAGMA table_info('samples')",
        "SELECT 1; PRAGMA enable_profiling",
        "pragma ENABLE_PROFILING",
        "/* c */ PRAGMA enable_profiling = 'json'",
    ],
)
def test_pragma_is_refused_by_statement_type(pipe: dict, statement: str) -> None:
    """DuckDB 1.5.5 (the ducklake environment) runs the profiling pragmas despite lock_configuration,
    so every PRAGMA is refused before anything runs; CALL pragma_...() reads the same."""
    refused(query(pipe["db"], statement), "refuses PRAGMA", "CALL pragma_")
    result = query(pipe["db"], "CALL pragma_table_info('samples')")
    assert result.exit_code == 0, result.output
    assert "sample_id" in {row["name"] for row in json.loads(result.output)}


@pytest.mark.parametrize(
    "statement",
    [
        "RESET enable_external_access; SELECT * FROM read_text('{f}')",
        "SET allowed_directories = ['{d}']; SELECT * FROM read_text('{f}')",
        "SET allowed_paths = ['{f}']; SELECT * FROM read_text('{f}')",
    ],
)
def test_re_enabling_then_reading_is_refused(pipe: dict, statement: str) -> None:
    sql = statement.format(f=pipe["outside"] / "secret.csv", d=pipe["outside"])
    refused(query(pipe["db"], sql), "locked")


def test_writes_stay_refused(pipe: dict) -> None:
    refused(query(pipe["db"], "DELETE FROM samples"), "read-only")
    with duckdb.connect(str(pipe["db"]), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 12


# ---- allowed ------------------------------------------------------------------------------------


def test_selects_on_every_table_and_view_work(pipe: dict) -> None:
    """Every view of the file (stage views, sample_scores, ...) reads only tables: all of them work in the sandbox."""
    with duckdb.connect(str(pipe["db"]), read_only=True) as con:
        relations = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT internal AND database_name = current_database() "
                "UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal "
                "AND database_name = current_database() ORDER BY 1"
            ).fetchall()
        ]
        counts = {name: con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in relations}
    assert {"samples", "selections", "stage_runs", "sample_scores", "lengths"} <= set(counts)
    for name, count in counts.items():
        result = query(pipe["db"], f'SELECT count(*) AS n FROM "{name}"')
        assert result.exit_code == 0, (name, result.output)
        assert json.loads(result.output) == [{"n": count}], name


def test_ordinary_queries_work(pipe: dict) -> None:
    result = query(
        pipe["db"],
        "WITH s AS (SELECT selection, count(*) AS n FROM selections GROUP BY 1) SELECT * FROM s ORDER BY selection",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"selection": "longest", "n": 5}, {"selection": "random_few", "n": 4}]
    for statement in (
        "DESCRIBE samples",
        "SUMMARIZE samples",
        "SELECT * FROM duckdb_settings() LIMIT 1",
        "CREATE TEMP TABLE t AS SELECT 1 AS x; SELECT * FROM t",
    ):
        assert query(pipe["db"], statement).exit_code == 0, statement


def test_allow_files_reads_and_writes_files(pipe: dict) -> None:
    result = query(pipe["db"], f"SELECT * FROM read_csv('{pipe['outside'] / 'secret.csv'}')", "--allow-files")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"token": "hunter2"}]
    target = pipe["outside"] / "ids.csv"
    assert (
        query(pipe["db"], f"COPY (SELECT sample_id FROM samples ORDER BY 1) TO '{target}'", "--allow-files").exit_code
        == 0
    )
    assert len(target.read_text().splitlines()) == 13
    # files only: ATTACH, extensions and settings stay refused
    refused(query(pipe["db"], f"ATTACH '{pipe['outside'] / 'x.duckdb'}' AS x", "--allow-files"), "refuses")
    refused(query(pipe["db"], "LOAD httpfs", "--allow-files"), "refuses")
    refused(query(pipe["db"], "SET autoinstall_known_extensions = true", "--allow-files"), "locked")


def test_help_says_what_is_allowed() -> None:
    text = " ".join(CliRunner().invoke(main, ["query", "--help"]).output.split())
    for phrase in (
        "read-only sandbox",
        "Refused:",
        "reading or writing any other file",
        "ATTACH/DETACH",
        "INSTALL/LOAD",
        "PRAGMA",
        "configuration is locked",
        "--allow-files lifts only the file rule",
    ):
        assert phrase in text, phrase
