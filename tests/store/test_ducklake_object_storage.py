"""A DuckLake whose data files live on object storage (`data_path: s3://...`, issue #22).

A real S3-compatible server (moto's `moto_server`, on 127.0.0.1 and a free port, started here) and
DuckDB's httpfs extension loaded from its wheel (nothing downloaded). The same small pipeline
(text_stats in 2 shards, a random and a top_score selection) runs with `curation run` on a DuckDB
file and on a DuckLake with its data in a bucket: the rows must be equal, every data file the
catalog lists must be an object in the bucket, and the credentials (environment variables only)
must appear in no output; `DuckLakeStore.maintain` deletes an unlisted object only once it is older
than the grace period. Runs in the DuckLake environment (make test-ducklake) with PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from curation_assets.store.config import StoreUnavailableError
from tests.support.pipelines import pipeline_document
from tests.support.postgres import skip_without_ducklake

BIN = Path(sys.executable).parent
MOTO = BIN / "moto_server"
skip_without_ducklake(
    "DuckLake object-storage test",
    None if MOTO.exists() else f"{MOTO} (pip install -c constraints-ducklake.txt 'moto[server]')",
)

import boto3  # noqa: E402
import yaml  # noqa: E402

from curation_assets.store.duckdb_store import DuckDBStore  # noqa: E402
from curation_assets.store.ducklake_store import DuckLakeStore  # noqa: E402
from tests.store.lake_compare import SELECTIONS, store_tables  # noqa: E402
from tests.support.files import write_samples  # noqa: E402
from tests.support.postgres import free_port, postgres_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "curation-lake"
PREFIX = "runs/e2e/"


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1: yields the AWS_* variables a client needs (random keys; moto
    accepts any), stopped (SIGKILL of the process we started) when the block exits."""
    port = free_port()
    proc = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                assert time.monotonic() < deadline, "moto_server did not listen within 30 s"
                time.sleep(0.05)
        yield {
            "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
            "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_REGION": "us-east-1",
        }
    finally:
        proc.kill()
        proc.wait(timeout=30)


def document(store: dict) -> dict:
    return pipeline_document(
        "lake_s3",
        stages=[{"name": "lengths", "kind": "text_stats", "shards": 2}],
        selections=SELECTIONS,
        source_format="alpaca",
        **store,
    )


def curation(folder: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "curation"), *args], check=False, cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.e2e
def test_a_pipeline_on_a_ducklake_with_s3_data_equals_the_duckdb_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    file_folder, lake_folder = tmp_path / "file", tmp_path / "lake"
    for folder in (file_folder, lake_folder):
        folder.mkdir()
        write_samples(folder / "pool.jsonl", 300)
    (file_folder / "defs.yaml").write_text(yaml.safe_dump(document({"duckdb_path": "run.duckdb"})))
    done = curation(file_folder, env, "run", "defs.yaml")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with DuckDBStore(file_folder / "run.duckdb").reader(read_only=True) as con:
        expected = store_tables(con)

    with s3_server() as aws, postgres_server() as pg:
        s3 = boto3.client(
            "s3",
            endpoint_url=aws["AWS_ENDPOINT_URL"],
            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
            region_name=aws["AWS_REGION"],
        )
        s3.create_bucket(Bucket=BUCKET)
        store = {
            "kind": "ducklake",
            "catalog": pg.new_catalog(f"s3_{uuid.uuid4().hex[:8]}"),
            "password_env": pg.password_env,
            "data_path": f"s3://{BUCKET}/{PREFIX}",
            "work_path": "work",
        }
        (lake_folder / "defs.yaml").write_text(yaml.safe_dump(document({"store": store})))
        lake_env = {**env, **pg.env, **aws}

        started = time.perf_counter()
        done = curation(lake_folder, lake_env, "run", "defs.yaml")
        seconds = time.perf_counter() - started
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-4000:]
        query = curation(
            lake_folder,
            lake_env,
            "query",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM sample_scores WHERE in_longest",
        )
        assert query.returncode == 0, query.stderr[-2000:]
        assert query.stdout.split() == ["n", "5"]
        for text in (output, query.stdout + query.stderr, (lake_folder / "defs.yaml").read_text()):
            assert aws["AWS_SECRET_ACCESS_KEY"] not in text and pg.password not in text

        # in this process, without the credentials: a clear error naming the variables, nothing written
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(pg.password_env, pg.password)
        lake = DuckLakeStore(
            catalog=store["catalog"],
            data_path=store["data_path"],
            work_path=tmp_path / "w",
            password_env=pg.password_env,
        )
        with pytest.raises(StoreUnavailableError, match="export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
            lake.connect(read_only=True)

        objects = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
        for name, value in aws.items():
            monkeypatch.setenv(name, value)
        with lake.reader(read_only=True) as con:
            got = store_tables(con)
            listed = [
                row[0]
                for table in ("text_stats", "selections")
                for row in con.execute(f"SELECT data_file FROM ducklake_list_files('lake', '{table}')").fetchall()
            ]

        # maintenance lists and deletes objects: an unlisted object under the prefix (what a killed
        # writer leaves) stays while younger than the grace period, then goes; the lake's objects stay
        orphan = f"{PREFIX}main/text_stats/ducklake-orphan.parquet"
        s3.put_object(Bucket=BUCKET, Key=orphan, Body=b"PAR1 not a committed file")
        assert lake.maintain(older_than=timedelta(hours=1)).deleted_orphans == []
        time.sleep(2.1)  # S3 modification times have one-second resolution
        report = lake.maintain(older_than=timedelta(seconds=1))
        assert report.deleted_orphans == [f"s3://{BUCKET}/{orphan}"]
        after = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
        assert after == set(objects)
        with lake.reader(read_only=True) as con:
            assert store_tables(con) == got

    print(f"pipeline on a DuckLake with S3 data (moto): {seconds:.1f} s, {len(objects)} objects")
    assert got == expected
    # the rows are in Parquet objects under the prefix, and every file the catalog lists is one of them
    assert listed and all(path.startswith(f"s3://{BUCKET}/{PREFIX}") for path in listed), listed
    assert {path.removeprefix(f"s3://{BUCKET}/") for path in listed} <= set(objects), (listed, objects)
    assert all(key.startswith(PREFIX) and key.endswith(".parquet") and size > 0 for key, size in objects.items())
