"""Reclaiming a DuckLake's files (issue #22): `curation maintain` / `DuckLakeStore.maintain`.

Orphans: a real writer process SIGKILLed inside its transaction (tests/store/ducklake_worker.py,
`hold`) leaves the Parquet file it wrote before COMMIT, which the catalog never lists. Maintenance
keeps it while it is younger than the grace period (a running writer's files look the same), and
deletes it once older (its modification time set back two hours: what two hours of waiting do to
it), while a second writer's fresh orphan stays and every committed row stays readable.
Old snapshots: a replaced selection's file and the files a merge replaced go only after the
snapshots are expired and the deletion was scheduled more than the grace period ago.
Runs in the DuckLake environment (make test-ducklake) with Debian's PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from tests.support.postgres import skip_without_ducklake

skip_without_ducklake("DuckLake maintenance tests")

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402

from curation_assets.store.ducklake_store import DuckLakeStore  # noqa: E402
from curation_assets.store.writes import insert_stage_rows, replace_selection  # noqa: E402
from tests.store.ducklake_worker import start_holding_writer, text_stats_rows  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

BIN = Path(sys.executable).parent
HOUR = timedelta(hours=1)


def commit_text_stats(store: DuckLakeStore, folder: Path, prefix: str, rows: int) -> None:
    staged = folder / f"{prefix}.parquet"
    pq.write_table(text_stats_rows([f"{prefix}-{i}" for i in range(rows)]), staged)
    with store.transaction() as con:
        insert_stage_rows(con, "text_stats", "lengths", "h0", staged)


def commit_selection(store: DuckLakeStore, folder: Path, config_hash: str, members: list[str]) -> None:
    staged = folder / f"members-{config_hash}.parquet"
    table = pa.table(
        {
            "sample_id": members,
            "rank": pa.array(range(1, len(members) + 1), pa.int32()),
            "score": pa.array([float(-i) for i in range(len(members))]),
        }
    )
    pq.write_table(table, staged)
    with store.transaction() as con:
        replace_selection(con, "chosen", config_hash, staged)


def contents(con: duckdb.DuckDBPyConnection) -> dict:
    return {
        "text_stats": con.execute("SELECT * FROM text_stats ORDER BY sample_id").fetchall(),
        "selections": con.execute("SELECT * FROM selections ORDER BY ALL").fetchall(),
    }


def listed_files(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {
        row[0]
        for table in ("text_stats", "selections")
        for row in con.execute(f"SELECT data_file FROM ducklake_list_files('lake', '{table}')").fetchall()
    }


def kill_a_writer_mid_transaction(pg: PostgresServer, lake_args: dict, work: Path) -> None:
    """A writer process inserts 5,000 rows (Parquet files, not inlined) and is SIGKILLed before COMMIT."""
    proc = start_holding_writer({"action": "hold", "store": lake_args, "work": str(work), "rows": 5000}, pg.env)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def parquet_files(folder: Path) -> set[Path]:
    return set(folder.rglob("*.parquet"))


def test_orphans_of_a_killed_writer_go_after_the_grace_period_and_committed_rows_stay(
    pg: PostgresServer, lake: DuckLakeStore, lake_args: dict, tmp_path: Path
) -> None:
    data = Path(lake_args["data_path"])
    for chunk in range(2):
        commit_text_stats(lake, tmp_path, f"c{chunk}", 1500)
    commit_selection(lake, tmp_path, "h1", [f"c0-{i}" for i in range(500)])
    with lake.reader(read_only=True) as con:
        expected = contents(con)
    committed = parquet_files(data)

    kill_a_writer_mid_transaction(pg, lake_args, tmp_path / "kill1")
    orphans = parquet_files(data) - committed
    assert orphans, "the killed writer left no file: nothing to test"
    with lake.reader(read_only=True) as con:
        assert {Path(p) for p in listed_files(con)} == committed  # the catalog lists none of them

    # inside the grace period: a running writer's uncommitted files look exactly like these, so they stay
    report = lake.maintain(older_than=HOUR)
    assert report.deleted_orphans == [] and all(p.exists() for p in orphans)

    two_hours_ago = time.time() - 2 * 3600
    for path in orphans:
        os.utime(path, (two_hours_ago, two_hours_ago))
    kill_a_writer_mid_transaction(pg, lake_args, tmp_path / "kill2")  # a fresh orphan, inside the grace period
    fresh = parquet_files(data) - committed - orphans
    assert fresh

    dry = lake.maintain(older_than=HOUR, dry_run=True)
    assert {Path(p) for p in dry.deleted_orphans} == orphans and all(p.exists() for p in orphans)

    (tmp_path / "pool.jsonl").write_text("")
    document = {
        "type": "curation_assets.CurationPipeline",
        "attributes": {
            "name": "lake_maintain",
            "store": {"kind": "ducklake", **{k: v for k, v in lake_args.items() if k != "lock_timeout_s"}},
            "sources": [{"name": "pool", "path": "pool.jsonl", "format": "alpaca"}],
        },
    }
    (tmp_path / "defs.yaml").write_text(yaml.safe_dump(document))
    done = subprocess.run(
        [str(BIN / "curation"), "maintain", "defs.yaml", "--older-than", "1h"],
        check=False,
        cwd=tmp_path,
        env={**pg.env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"deleted {len(orphans)} orphaned file(s)" in done.stdout, done.stdout
    assert pg.password not in done.stdout + done.stderr
    assert not any(p.exists() for p in orphans)
    assert all(p.exists() for p in fresh)  # the second writer's, inside the grace period
    assert parquet_files(data) == committed | fresh
    with lake.reader(read_only=True) as con:
        assert contents(con) == expected


def test_files_of_old_snapshots_go_one_grace_period_after_they_are_expired(lake: DuckLakeStore, tmp_path: Path) -> None:
    for chunk in range(3):
        commit_text_stats(lake, tmp_path, f"c{chunk}", 1000)  # three commits: three files
    commit_selection(lake, tmp_path, "h1", [f"c0-{i}" for i in range(500)])
    with lake.reader(read_only=True) as con:
        first_selection = {
            Path(p)
            for (p,) in con.execute("SELECT data_file FROM ducklake_list_files('lake', 'selections')").fetchall()
        }
        text_files = {
            Path(p)
            for (p,) in con.execute("SELECT data_file FROM ducklake_list_files('lake', 'text_stats')").fetchall()
        }
    assert len(text_files) == 3 and len(first_selection) == 1
    commit_selection(lake, tmp_path, "h2", [f"c1-{i}" for i in range(500)])  # replaces it: only old snapshots list it
    with lake.reader(read_only=True) as con:
        expected = contents(con)

    merged = lake.maintain(older_than=HOUR, merge=True)  # nothing is an hour old: only the merge happens
    assert "main.text_stats" in merged.merged_tables and merged.expired_snapshots == []
    with lake.reader(read_only=True) as con:
        assert len(con.execute("SELECT * FROM ducklake_list_files('lake', 'text_stats')").fetchall()) == 1
        assert contents(con) == expected
    assert all(p.exists() for p in text_files | first_selection)  # merged-away files are only scheduled

    time.sleep(1.5)
    first = lake.maintain(older_than=timedelta(seconds=1))
    assert first.expired_snapshots  # every snapshot but the latest is over a second old
    # the replaced selection's file was scheduled for deletion just now: a reader still on an expired
    # snapshot keeps it for one more grace period
    assert all(p.exists() for p in first_selection)
    time.sleep(1.5)
    second = lake.maintain(older_than=timedelta(seconds=1))
    assert {Path(p) for p in first.deleted_old_files + second.deleted_old_files} == text_files | first_selection
    assert not any(p.exists() for p in text_files | first_selection)
    with lake.reader(read_only=True) as con:
        assert contents(con) == expected
        assert all(Path(p).exists() for p in listed_files(con))
