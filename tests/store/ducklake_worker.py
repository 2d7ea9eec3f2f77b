"""A writer process for tests/store/test_ducklake_store.py: `python -m tests.store.ducklake_worker JSON`,
and the tests' functions that start it (`start_writer`, `start_holding_writer`).

Each action opens its own DuckLakeStore (its own DuckDB instance and catalog connections), so the
writers are as independent as workers on different machines; the password comes only from the
environment variable the store names. It prints one JSON line: what it did and how many commits it
had to retry after a conflict.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation_assets.store.ducklake_store import DuckLakeStore
from curation_assets.store.writes import StageRunRecord, insert_stage_rows, insert_stage_run, replace_selection, utc_now

ROOT = Path(__file__).resolve().parents[2]


def start_writer(job: dict[str, Any], env: dict[str, str]) -> subprocess.Popen:
    """This module in a process of its own running `job`, with `env` (the PostgreSQL server's, which
    names the password variable) and one thread; its stdout and stderr are pipes of text."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.ducklake_worker", json.dumps(job)],
        cwd=ROOT,
        env={**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_holding_writer(job: dict[str, Any], env: dict[str, str], timeout_s: float = 120.0) -> subprocess.Popen:
    """A `hold` job's writer, returned once it is inside its transaction (job["work"]/inside exists);
    it commits when work/go appears. One that exits or is not inside within `timeout_s` is killed
    and fails the test with its stderr."""
    Path(job["work"]).mkdir()
    proc = start_writer(job, env)
    deadline = time.monotonic() + timeout_s
    while not (Path(job["work"]) / "inside").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"the writer never got inside its transaction: {err[-2000:]}")
        time.sleep(0.05)
    return proc


def text_stats_rows(sample_ids: list[str]) -> pa.Table:
    """Rows of the text_stats table for `sample_ids`, the numbers derived from each id's position."""
    n = len(sample_ids)
    numbers = pa.array([i % 97 + 1 for i in range(n)], pa.int32())
    return pa.table(
        {
            "sample_id": sample_ids,
            "instruction_chars": numbers,
            "input_chars": numbers,
            "output_chars": numbers,
            "instruction_words": numbers,
            "output_words": numbers,
            "conversation_chars": pa.array([i * 3 for i in range(n)], pa.int64()),
            "n_turns": pa.array([2] * n, pa.int32()),
        }
    )


def wait_for(path: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


def barrier(folder: Path, me: int, parties: int) -> None:
    """Mark `me` ready and wait until all `parties` are."""
    (folder / f"ready-{me}").touch()
    deadline = time.monotonic() + 120
    while len(list(folder.glob("ready-*"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("the other writers never got ready")
        time.sleep(0.02)


def run_record(stage: str, shard: str, rows: int) -> StageRunRecord:
    now = utc_now()
    return StageRunRecord(
        pipeline="lake_test",
        stage=stage,
        kind="text_stats",
        config={"shard": shard},
        config_hash="h0",
        code_version="1",
        dagster_run_id=None,
        rows_in=rows,
        rows_out=rows,
        started_at=now,
        finished_at=now,
        stats={"shard": shard},
    )


def main(args: dict[str, Any]) -> dict[str, Any]:
    store = DuckLakeStore(**args["store"])
    work = Path(args["work"])
    action = args["action"]
    if action == "shard":
        # a shard of a sharded stage: its rows in `chunks` commits, each with its stage_runs row
        wait_for(work / "go")
        me, chunks, per_chunk = args["shard"], args["chunks"], args["rows"]
        for chunk in range(chunks):
            ids = [f"s{me}-c{chunk}-{i}" for i in range(per_chunk)]
            staged = work / f"shard{me}-chunk{chunk}.parquet"
            pq.write_table(text_stats_rows(ids), staged)
            with store.transaction() as con:
                insert_stage_rows(con, "text_stats", "lengths", "h0", staged)
                insert_stage_run(con, run_record("lengths", f"{me}/{chunk}", per_chunk))
    elif action == "replace":
        # replace one selection's members, side by side with another writer doing the same
        staged = work / f"members-{args['me']}.parquet"
        members = args["members"]
        pq.write_table(
            pa.table(
                {
                    "sample_id": members,
                    "rank": pa.array(range(1, len(members) + 1), pa.int32()),
                    "score": pa.array([float(len(members) - i) for i in range(len(members))]),
                }
            ),
            staged,
        )
        if args["barrier"] == "before":  # both start together; the store's write lock must order them
            barrier(work, args["me"], args["parties"])
        with store.transaction() as con:
            replace_selection(con, "chosen", f"h{args['me']}", staged)
            if args["barrier"] == "inside":  # both have written before either commits
                barrier(work, args["me"], args["parties"])
            time.sleep(args.get("hold_s", 0))
    elif action == "schema":
        # a worker's first step on a fresh lake: every process applies the DDL at about the same time
        wait_for(work / "go")
        store.ensure_schema(args["stage_files"])
    elif action == "hold":
        # insert rows, say so, then wait inside the open transaction (killed here, or released by `go`)
        staged = work / "held.parquet"
        pq.write_table(text_stats_rows([f"held-{i}" for i in range(args["rows"])]), staged)
        with store.transaction() as con:
            insert_stage_rows(con, "text_stats", "lengths", "h0", staged)
            insert_stage_run(con, run_record("lengths", "held", args["rows"]))
            (work / "inside").touch()
            wait_for(work / "go", timeout_s=600)
    else:
        raise SystemExit(f"unknown action {action!r}")
    return {"action": action, "retried": store.retried_commits}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
