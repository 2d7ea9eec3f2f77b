"""A pipeline on a DuckLake (issue #22) equals the same pipeline on a DuckDB file.

text_stats and the packaged MiniLM embedding, each in 3 shards, a random and a top_score
selection: once with `curation run` on a DuckDB file, once on `store: {kind: ducklake}` with
Dagster's multiprocess executor (3 shard steps at a time, each process writing its own DuckLake
transactions) and then `curation run` again on the lake (nothing new to compute: no row may be
doubled; the file gets its second run too). Rows, embeddings, selections and stage_runs must match; `curation query` reads the lake.
Runs in the DuckLake environment (make test-ducklake) with Debian's PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.pipelines import pipeline_document
from tests.support.postgres import skip_without_ducklake

skip_without_ducklake("DuckLake pipeline test")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from curation_assets.store.duckdb_store import DuckDBStore  # noqa: E402
from curation_assets.store.ducklake_store import DuckLakeStore  # noqa: E402
from tests.store.lake_compare import SELECTIONS, store_tables  # noqa: E402
from tests.support.files import write_samples  # noqa: E402
from tests.support.postgres import postgres_server  # noqa: E402
from tests.support.runs import execute_multiprocess_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHARDS = 3


def document(store: dict) -> dict:
    sharded = {"shards": SHARDS}
    return pipeline_document(
        "lake_e2e",
        stages=[
            {"name": "embed", "kind": "embedding", "batch_size": 16, **sharded},
            {"name": "lengths", "kind": "text_stats", **sharded},
        ],
        selections=SELECTIONS,
        source_format="alpaca",
        **store,
    )


def tables(con: duckdb.DuckDBPyConnection) -> dict:
    return {
        **store_tables(con),
        "source_samples": con.execute(
            "SELECT source, sample_id, n_records, first_record_no, active FROM source_samples ORDER BY ALL"
        ).fetchall(),
        "embed": {
            sid: np.asarray(vector)
            for sid, vector in con.execute("SELECT sample_id, embedding FROM embeddings").fetchall()
        },
        "embed_rows": con.execute("SELECT count(*), count(DISTINCT sample_id) FROM embeddings").fetchone(),
        "scores_view": con.execute("SELECT count(*) FROM sample_scores").fetchone(),
    }


def curation(folder: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "curation"), *args], check=False, cwd=folder, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.e2e
def test_a_sharded_pipeline_on_ducklake_equals_the_duckdb_file(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    file_folder, lake_folder = tmp_path / "file", tmp_path / "lake"
    for folder in (file_folder, lake_folder):
        folder.mkdir()
        write_samples(folder / "pool.jsonl", 45)

    (file_folder / "defs.yaml").write_text(yaml.safe_dump(document({"duckdb_path": "run.duckdb"})))
    for _ in range(2):  # as on the lake below: a first run, then one with nothing new
        done = curation(file_folder, env, "run", "defs.yaml")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with DuckDBStore(file_folder / "run.duckdb").reader(read_only=True) as con:
        expected = tables(con)

    with postgres_server() as pg:
        catalog = pg.new_catalog(f"e2e_{uuid.uuid4().hex[:8]}")
        store = {
            "kind": "ducklake",
            "catalog": catalog,
            "password_env": pg.password_env,
            "data_path": "lake_data",
            "work_path": "work",
        }
        (lake_folder / "defs.yaml").write_text(yaml.safe_dump(document({"store": store})))
        started = time.perf_counter()
        done = execute_multiprocess_job(lake_folder, SHARDS, {**env, **pg.env})  # SHARDS steps at a time
        seconds = time.perf_counter() - started
        log = done.stdout + done.stderr
        assert done.returncode == 0, log[-4000:]
        assert "multiprocess executor" in log and f"lake_e2e__embed__shard_{SHARDS - 1}_of_{SHARDS}" in log
        assert pg.password not in log

        again = curation(lake_folder, {**env, **pg.env}, "run", "defs.yaml")  # all committed: nothing to redo
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
        assert pg.password not in again.stdout + again.stderr

        query = curation(
            lake_folder,
            {**env, **pg.env},
            "query",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM sample_scores WHERE in_random_pick",
        )
        assert query.returncode == 0, query.stderr[-2000:]
        assert query.stdout.split() == ["n", "12"]
        # the sandbox reads the lake's data files, but writes nothing there and reads nothing else
        data_file = next((lake_folder / "lake_data").rglob("*.parquet"))
        refused = {
            f"COPY (SELECT 1 AS x) TO '{data_file}' (FORMAT parquet)": "refuses COPY on a DuckLake",
            "INSERT INTO samples (sample_id) VALUES ('x')": "read-only",
            f"SELECT * FROM read_text('{lake_folder / 'defs.yaml'}')": "sandbox",
            f"SELECT count(*) FROM read_parquet('{data_file}')": "",
        }
        for sql, message in refused.items():
            answer = curation(lake_folder, {**env, **pg.env}, "query", sql)
            if message:
                assert answer.returncode != 0 and message in answer.stderr, (sql, answer.stderr[-1000:])
            else:  # the lake's own files: readable, as its tables are
                assert answer.returncode == 0, (sql, answer.stderr[-1000:])

        os.environ[pg.password_env] = pg.password
        try:
            lake = DuckLakeStore(
                catalog=catalog,
                data_path=lake_folder / "lake_data",
                work_path=lake_folder / "work",
                password_env=pg.password_env,
            )
            with lake.reader(read_only=True) as con:
                got = tables(con)
        finally:
            os.environ.pop(pg.password_env, None)

    print(f"DuckLake pipeline, {SHARDS} shards x 2 stages under the multiprocess executor: {seconds:.1f} s")
    for key in ("samples", "source_samples", "lengths", "selections", "embed_rows", "scores_view"):
        assert got[key] == expected[key], key
    assert got["embed"].keys() == expected["embed"].keys()
    for sid, vector in expected["embed"].items():
        np.testing.assert_allclose(got["embed"][sid], vector, rtol=1e-5, atol=1e-6)
    # the file run ran each shard in-process, the lake run in separate processes: the same runs either way
    assert got["runs"] == expected["runs"]
    computed = [r for r in got["runs"] if r[0] == "embed" and r[4] > 0]  # the second run's rows_out are 0
    assert len(computed) == SHARDS and sum(r[4] for r in computed) == len(got["embed"])
