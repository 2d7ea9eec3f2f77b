"""The `ducklake` store against a real PostgreSQL catalog (issue #22): schema, idempotent writes,
concurrent writer processes, conflicting replaces, snapshot reads and a writer killed mid-transaction.

Runs in the DuckLake environment (`make test-ducklake`: .venv-ducklake with duckdb 1.5.5 and the
extension wheels) with Debian's PostgreSQL binaries; elsewhere the module skips naming what is
missing, unless CURATION_REQUIRE_DUCKLAKE=1 (make test-ducklake, CI), where that is an error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.postgres import skip_without_ducklake

skip_without_ducklake("DuckLake store tests")

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from curation_assets.store import ducklake_store  # noqa: E402
from curation_assets.store.duckdb_store import DuckDBStore  # noqa: E402
from curation_assets.store.ducklake_store import DuckLakeStore  # noqa: E402
from curation_assets.store.sql_files import execute_sql_file  # noqa: E402
from curation_assets.store.writes import replace_selection  # noqa: E402
from tests.store.conftest import STAGE_FILES  # noqa: E402
from tests.store.ducklake_worker import start_holding_writer, start_writer  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402


def columns(con: duckdb.DuckDBPyConnection, catalog: str) -> dict[str, list[tuple[str, str, str]]]:
    rows = con.execute(
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_catalog = $c ORDER BY table_name, ordinal_position",
        {"c": catalog},
    ).fetchall()
    out: dict[str, list[tuple[str, str, str]]] = {}
    for table, column, type_name, nullable in rows:
        out.setdefault(table, []).append((column, type_name, nullable))
    return out


def run_workers(pg: PostgresServer, jobs: list[dict], timeout_s: float = 300) -> list[dict]:
    """Start one writer process per job (tests/store/ducklake_worker.py) and collect their JSON lines."""
    procs = [start_writer(job, pg.env) for job in jobs]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout_s)
        assert proc.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def test_schema_applies_twice_and_matches_the_file_store(lake_args: dict, tmp_path: Path) -> None:
    store = DuckLakeStore(**lake_args)
    for _ in range(2):
        ducklake_store._schema_applied.clear()  # the per-process memo would skip the second run
        store.ensure_schema(STAGE_FILES)
    file_store = DuckDBStore(tmp_path / "plain.duckdb")
    file_store.ensure_schema(STAGE_FILES)
    with file_store.reader(read_only=True) as con:
        expected = columns(con, "plain")
    with store.reader(read_only=True) as con:
        got = columns(con, "lake")
        snapshots = con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()
    assert got == expected  # every table and view, column names, types and NOT NULL as on a file
    assert len(expected) > 40 and snapshots is not None


def test_concurrent_schema_calls_on_a_fresh_lake(pg: PostgresServer, lake_args: dict, tmp_path: Path) -> None:
    """Three processes apply the whole DDL at once (a run's first steps on a new lake): all succeed
    and the lake holds each table once, as a single call makes it."""
    work = tmp_path / "barrier"
    work.mkdir()
    (work / "go").touch()
    job = {"action": "schema", "store": lake_args, "work": str(work), "stage_files": STAGE_FILES}
    run_workers(pg, [job] * 3)
    file_store = DuckDBStore(tmp_path / "plain.duckdb")
    file_store.ensure_schema(STAGE_FILES)
    with file_store.reader(read_only=True) as con:
        expected = columns(con, "plain")
    with DuckLakeStore(**lake_args).reader(read_only=True) as con:
        assert columns(con, "lake") == expected


def test_upsert_writes_apply_twice_without_duplicates(lake: DuckLakeStore, tmp_path: Path) -> None:
    """The writes that were ON CONFLICT upserts: run twice (the second with new values) they leave one
    row per key with the second values, exactly as on a DuckDB file."""
    file_store = DuckDBStore(tmp_path / "plain.duckdb")
    file_store.ensure_schema(STAGE_FILES)
    now = dt.datetime(2026, 1, 1, 12, 0, 0)
    answers = [
        pa.table(
            {
                "request_hash": ["r1", "r2"],
                "model": ["m", "m"],
                "request": ['{"q": 1}', '{"q": 2}'],
                "response": [f"a1-{attempt}", f"a2-{attempt}"],
                "finish_reason": ["stop", "stop"],
                "prompt_tokens": [3, 4],
                "completion_tokens": [5, 6],
                "latency_s": [0.1, 0.2],
                "created_at": pa.array([now, now], pa.timestamp("us")),
            }
        )
        for attempt in range(2)
    ]
    results = {}
    for store in (file_store, lake):
        for attempt in range(2):
            with store.transaction() as con:
                execute_sql_file(
                    con,
                    "writes/lora_checkpoint_insert.sql",
                    {
                        "stage": "warm",
                        "config_hash": "h",
                        "epoch": 1,
                        "path": f"ckpt-{attempt}",
                        "adapter_sha256": f"a{attempt}",
                        "optimizer_sha256": f"o{attempt}",
                        "mean_lr": 0.1 * (attempt + 1),
                        "now": "2026-01-01 00:00:00",
                    },
                )
                execute_sql_file(
                    con,
                    "writes/trained_scorer_insert.sql",
                    {
                        "stage": "deita",
                        "config_hash": "h",
                        "scorer": "quality",
                        "backend": "torch",
                        "path": f"scorer-{attempt}",
                        "files": "{}",
                        "n_train": 10 + attempt,
                        "n_heldout": 2,
                        "heldout_spearman": 0.5,
                        "heldout_mae": 0.1,
                        "details": "{}",
                        "now": "2026-01-01 00:00:00",
                    },
                )
                con.register("new_llm_answers", answers[attempt])
                execute_sql_file(con, "writes/llm_cache_insert.sql")
                con.unregister("new_llm_answers")
        with store.reader(read_only=True) as con:
            results[store.kind] = {
                table: con.execute(f"SELECT * EXCLUDE (created_at) FROM {table} ORDER BY ALL").fetchall()
                for table in ("lora_checkpoints", "trained_scorers", "llm_cache")
            }
    assert results["ducklake"] == results["duckdb"]
    assert len(results["ducklake"]["lora_checkpoints"]) == 1 and len(results["ducklake"]["llm_cache"]) == 2


def test_concurrent_shard_writers_commit_every_row_once(
    pg: PostgresServer, lake: DuckLakeStore, lake_args: dict, tmp_path: Path
) -> None:
    """Four writer processes, each committing its shard's rows in three transactions at the same time."""
    work = tmp_path / "barrier"
    work.mkdir()
    shards, chunks, rows = 4, 3, 150
    jobs = [
        {"action": "shard", "store": lake_args, "work": str(work), "shard": k, "chunks": chunks, "rows": rows}
        for k in range(shards)
    ]
    (work / "go").touch()  # all start as soon as they have attached
    started = time.perf_counter()
    outs = run_workers(pg, jobs)
    seconds = time.perf_counter() - started
    with lake.reader(read_only=True) as con:
        total, distinct = con.execute("SELECT count(*), count(DISTINCT sample_id) FROM text_stats").fetchone() or (0, 0)
        runs = con.execute("SELECT count(*), count(DISTINCT stage_run_id) FROM stage_runs").fetchone()
        per_shard = dict(
            con.execute("SELECT split_part(sample_id, '-', 1), count(*) FROM text_stats GROUP BY ALL").fetchall()
        )
    assert total == distinct == shards * chunks * rows
    assert runs == (shards * chunks, shards * chunks)
    assert per_shard == {f"s{k}": chunks * rows for k in range(shards)}
    print(f"{shards} writers x {chunks} commits x {rows} rows: {seconds:.1f} s, retries {[o['retried'] for o in outs]}")


@pytest.mark.parametrize(
    ("existing", "shared_work_path"),
    [(True, True), (False, True), (True, False)],
    ids=["selection-existed", "new-selection", "existed-no-shared-lock"],
)
def test_concurrent_replaces_of_one_selection_end_in_a_serial_order(
    pg: PostgresServer, lake: DuckLakeStore, lake_args: dict, tmp_path: Path, existing: bool, shared_work_path: bool
) -> None:
    """Two writer processes replace the same selection at the same time. Both must commit and the
    result must be one writer's members, never a mix or a double. With the shared work_path they are
    ordered by the store's write lock (a new selection deletes nothing, so DuckLake alone would let
    both commit: a mix); without it both write before either commits, and the second COMMIT's
    conflict (the selection's old rows deleted twice) is replayed."""
    work = tmp_path / "barrier"
    work.mkdir()
    if existing:
        staged = tmp_path / "old.parquet"
        pq.write_table(
            pa.table({"sample_id": ["old1", "old2"], "rank": pa.array([1, 2], pa.int32()), "score": [2.0, 1.0]}),
            staged,
        )
        with lake.transaction() as con:
            replace_selection(con, "chosen", "h_old", staged)
    members = {0: [f"a{i}" for i in range(5)], 1: [f"b{i}" for i in range(7)]}
    jobs = [
        {
            "action": "replace",
            "store": lake_args if shared_work_path else {**lake_args, "work_path": str(tmp_path / f"work{me}")},
            "work": str(work),
            "me": me,
            "parties": 2,
            "members": members[me],
            "barrier": "before" if shared_work_path else "inside",
            "hold_s": 1.5 if shared_work_path else 0,  # overlap: without the lock both would write meanwhile
        }
        for me in (0, 1)
    ]
    outs = run_workers(pg, jobs)
    with lake.reader(read_only=True) as con:
        final = con.execute("SELECT sample_id, config_hash FROM selections WHERE selection = 'chosen'").fetchall()
    got = sorted(sample_id for sample_id, _ in final)
    hashes = {config_hash for _, config_hash in final}
    assert got in (sorted(members[0]), sorted(members[1])), got
    assert len(hashes) == 1
    if not shared_work_path:
        assert sum(o["retried"] for o in outs) >= 1  # the second commit conflicted and was replayed


def test_a_reader_sees_one_committed_snapshot_while_a_writer_runs(
    pg: PostgresServer, lake: DuckLakeStore, lake_args: dict, tmp_path: Path
) -> None:
    work = tmp_path / "hold"
    proc = start_holding_writer({"action": "hold", "store": lake_args, "work": str(work), "rows": 500}, pg.env)
    try:
        with lake.reader(read_only=True) as con:
            count = "SELECT count(*) FROM text_stats"
            assert con.execute(count).fetchone() == (0,)  # the writer's rows are not committed
            (work / "go").touch()
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-2000:]
            assert con.execute(count).fetchone() == (0,)  # still the snapshot the block began with
        with lake.reader(read_only=True) as con:
            assert con.execute(count).fetchone() == (500,)
            assert con.execute("SELECT count(*) FROM stage_runs").fetchone() == (1,)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_writer_killed_mid_transaction_leaves_no_rows(
    pg: PostgresServer, lake: DuckLakeStore, lake_args: dict, tmp_path: Path
) -> None:
    work = tmp_path / "hold"
    job = {"action": "hold", "store": lake_args, "work": str(work), "rows": 5000}  # > the inlining limit: files
    proc = start_holding_writer(job, pg.env)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with lake.reader(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM text_stats").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM stage_runs").fetchone() == (0,)
    # the catalog is not left locked: the next writer commits at once
    (work / "inside").unlink()
    (work / "go").touch()
    run_workers(pg, [job])
    with lake.reader(read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT sample_id) FROM text_stats").fetchone() == (5000, 5000)


def test_the_password_is_never_in_an_error(pg: PostgresServer, lake_args: dict, monkeypatch) -> None:
    monkeypatch.setenv(pg.password_env, "Wrong-" + pg.password)
    ducklake_store._instances.clear()
    with pytest.raises(duckdb.Error) as caught:
        DuckLakeStore(**lake_args).connect()
    chain: list[BaseException] = [caught.value]
    while chain[-1].__cause__ or chain[-1].__context__:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)  # type: ignore[arg-type]
    assert "password authentication failed" in str(caught.value)
    assert all(pg.password not in str(err) for err in chain)
    monkeypatch.delenv(pg.password_env)
    with pytest.raises(RuntimeError, match=pg.password_env):
        DuckLakeStore(**lake_args).connect()


def test_read_only_on_a_catalog_nobody_wrote(pg: PostgresServer, lake_args: dict) -> None:
    store = DuckLakeStore(**lake_args)
    assert not store.exists()
    with pytest.raises(FileNotFoundError, match="run the pipeline first"):
        store.connect(read_only=True)
    store.ensure_schema()
    assert store.exists()
    with store.reader(read_only=True) as con:
        with pytest.raises(duckdb.Error):
            con.execute("INSERT INTO stage_runs (stage_run_id) VALUES ('x')")
