import datetime
import subprocess
import sys
import textwrap

import pytest

from curation_assets.store import DuckDBStore, StoreLockedError
from curation_assets.store.sql_files import execute_sql_file, fetch_row


def test_schema_is_idempotent_and_complete(tmp_path):
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.ensure_schema(["schema/stages/text_stats.sql"])
    store.ensure_schema(["schema/stages/text_stats.sql"])
    with store.reader() as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"samples", "source_samples", "rejected_samples", "stage_runs", "selections", "text_stats"} <= tables


def test_failed_transaction_leaves_previous_state(tmp_path):
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.ensure_schema()
    with store.transaction() as con:
        con.execute("INSERT INTO selections VALUES ('s', 'a', 1, NULL, 'h', now())")
    with pytest.raises(RuntimeError), store.transaction() as con:
        con.execute("DELETE FROM selections")
        con.execute("INSERT INTO selections VALUES ('s', 'b', 1, NULL, 'h', now())")
        raise RuntimeError("killed mid-write")
    with store.reader() as con:
        assert con.execute("SELECT sample_id FROM selections").fetchall() == [("a",)]


def test_named_parameters_go_to_each_statement(tmp_path):
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.ensure_schema()
    with store.transaction() as con:
        con.execute("CREATE TEMP TABLE m AS SELECT 'x' AS sample_id, 1 AS rank, 0.5::DOUBLE AS score")
        con.execute("COPY m TO '" + str(tmp_path / "m.parquet") + "' (FORMAT parquet)")
        execute_sql_file(
            con,
            "writes/selection_replace.sql",
            {
                "selection": "sel",
                "config_hash": "h",
                "members_file": str(tmp_path / "m.parquet"),
                "now": datetime.datetime(2026, 1, 1),
            },
        )
        assert fetch_row(con, "SELECT count(*) FROM selections WHERE selection = 'sel'")[0] == 1
    with pytest.raises(KeyError, match="members_file"), store.transaction() as con:
        execute_sql_file(con, "writes/selection_replace.sql", {"selection": "sel", "config_hash": "h", "now": None})


def test_waits_for_a_writer_then_reports_the_lock(tmp_path):
    path = tmp_path / "locked.duckdb"
    DuckDBStore(path).ensure_schema()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(path)!r})
        print("locked", flush=True)
        time.sleep(30)
    """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match="locked by another process"):
            DuckDBStore(path, lock_timeout_s=1.0).connect(read_only=True)
    finally:
        holder.kill()
        holder.wait()
    with DuckDBStore(path, lock_timeout_s=10).reader(read_only=True) as con:
        assert fetch_row(con, "SELECT count(*) FROM samples")[0] == 0


def test_read_only_needs_an_existing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the pipeline first"):
        DuckDBStore(tmp_path / "none.duckdb").connect(read_only=True)
