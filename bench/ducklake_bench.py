"""A DuckLake store against one DuckDB file (issue #22, docs/deployment.md "Shared store").

1. The same pipeline in one process on each store: the packaged ShareGPT pool (20,000
   conversations; --quick 1,000), the packaged MiniLM embedding, text_stats and a k-center
   selection, materialised by Dagster; wall time and peak RSS of the process, and the rows.
2. Commit throughput: 1, 2 and 4 writer processes, each committing chunks of 2,000 embedding
   rows (384 floats) through the project's Store (`store.transaction()` + `insert_stage_rows`, what
   a shard's commit does), started together behind a barrier; commits/s over all writers.

Both stores run under the DuckLake environment's DuckDB 1.5.5 (`.venv-ducklake`, `make
setup-ducklake`), so the comparison is of the store, not of the DuckDB version; PostgreSQL is
Debian's, started here (fsync on). From another environment the benchmark re-runs its measuring
processes with `.venv-ducklake/bin/python`, or reports what is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BenchResult, progress

ROOT = Path(__file__).resolve().parents[1]
WRITERS = (1, 2, 4)
CHUNK_ROWS, DIM = 2_000, 384


# -- measuring processes (run with the DuckLake environment's Python) ---------------------------


def own_peak_mb() -> float:
    """Peak RSS of this process (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pipeline_main(store: dict[str, Any], folder: Path, n: int) -> dict[str, Any]:
    """Materialise the pipeline on `store` in this process; its seconds, peak memory and row counts."""
    import dagster as dg
    import yaml

    from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
    from curation_assets.store.config import open_store

    document = {
        "type": "curation_assets.CurationPipeline",
        "attributes": {
            "name": "bench",
            "store": store,
            "automation": {"condition": "none"},
            "sources": [{"name": "sharegpt", "package": "sharegpt", "limit": n}],
            "stages": [
                {"name": "embed", "kind": "embedding", "template": "{instruction}"},
                {"name": "lengths", "kind": "text_stats"},
            ],
            "selections": [{"name": "kcenter", "kind": "kcenter_greedy", "embedding": "embed", "fraction": 0.05}],
        },
    }
    (folder / "defs.yaml").write_text(yaml.safe_dump(document))
    started = time.perf_counter()
    definitions = pipeline_definitions(load_pipeline_file(folder / "defs.yaml"))
    dg.materialize([*definitions.assets, *(definitions.asset_checks or [])], raise_on_error=True)
    seconds = time.perf_counter() - started
    with open_store(store).reader(read_only=True) as con:
        counts = {
            table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("samples", "embeddings", "text_stats", "selections")
        }
    return {"seconds": seconds, "peak_mb": own_peak_mb(), **counts}


def prepare_main(store: dict[str, Any]) -> dict[str, Any]:
    """Create the store and its tables once, before the writers start (two processes initialising
    one new DuckLake catalog at the same moment collide in PostgreSQL's catalog tables)."""
    from curation_assets.store.config import open_store

    open_store(store).ensure_schema(["schema/stages/embedding.sql"])
    return {}


def writer_main(store: dict[str, Any], worker: int, commits: int, go: Path) -> dict[str, Any]:
    """`commits` transactions of CHUNK_ROWS embedding rows each, after the barrier file `go` appears."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation_assets.store.config import open_store
    from curation_assets.store.writes import insert_stage_rows

    opened = open_store(store)
    with opened.reader() as con:  # connect (LOAD + ATTACH for DuckLake) before the timed loop
        con.execute("SELECT 1").fetchall()
    folder = Path(tempfile.mkdtemp(prefix=f"writer{worker}-"))
    rng = np.random.default_rng(worker)
    files = []
    for commit in range(commits):
        vectors = rng.random((CHUNK_ROWS, DIM), dtype=np.float32)
        table = pa.table({
            "sample_id": [f"w{worker}-c{commit}-{i}" for i in range(CHUNK_ROWS)],
            "embedding": pa.FixedSizeListArray.from_arrays(vectors.reshape(-1), DIM).cast(pa.list_(pa.float32())),
            "n_tokens": np.full(CHUNK_ROWS, 16, np.int32),
            "truncated": np.zeros(CHUNK_ROWS, bool),
        })  # fmt: skip
        files.append(folder / f"chunk{commit}.parquet")
        pq.write_table(table, files[-1])
    print("ready", flush=True)
    deadline = time.monotonic() + 600
    while not go.exists():  # the barrier: every writer starts committing at once
        if time.monotonic() > deadline:
            raise TimeoutError("no start signal from the benchmark within 600 s")
        time.sleep(0.01)
    started = time.time()
    for path in files:
        with opened.transaction() as con:
            insert_stage_rows(con, "embeddings", f"w{worker}", "bench", path)
    return {"start": started, "end": time.time(), "commits": commits}


# -- the benchmark ------------------------------------------------------------------------------


def lake_python() -> tuple[str | None, str]:
    """The Python of the DuckLake environment (this one if it is), or None and why not."""
    from curation_assets.store.config import ducklake_missing

    if not ducklake_missing():
        return sys.executable, ""
    other = ROOT / ".venv-ducklake" / "bin" / "python"
    if other.exists():
        return str(other), ""
    return None, f"no DuckLake environment (this one lacks {ducklake_missing()}; `make setup-ducklake`)"


def child(python: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-m", "bench.ducklake_bench", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench child {args[0]} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def writers(python: str, store: dict[str, Any], n: int, commits: int, env: dict[str, str], root: Path) -> float:
    """Commits/s of `n` writer processes started together (total commits over first start to last end)."""
    go = root / f"go-{time.monotonic_ns()}"
    child(python, ["prepare", json.dumps(store)], env)
    procs = [
        subprocess.Popen(
            [python, "-m", "bench.ducklake_bench", "writer", json.dumps(store), str(w), str(commits), str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for w in range(n)
    ]
    try:
        for proc in procs:  # every writer connected and its chunks staged
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"writer did not start: {line} {proc.communicate()[1][-2000:]}")
        go.touch()
        outs = []
        for proc in procs:
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"writer failed: {err[-3000:]}")
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:  # a failed writer must not leave the others waiting for the barrier
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return sum(o["commits"] for o in outs) / (max(o["end"] for o in outs) - min(o["start"] for o in outs))


def run(quick: bool) -> BenchResult:
    from tests.support.postgres import postgres_missing, postgres_server

    n = 1_000 if quick else 20_000
    commits = 5 if quick else 20
    result = BenchResult(f"DuckLake store vs one DuckDB file: {n:,} ShareGPT conversations, then concurrent commits")
    python, why = lake_python()
    missing = why or postgres_missing()
    if python is None or missing:
        result.notes.append(f"skipped: {missing}")
        return result
    with tempfile.TemporaryDirectory(prefix="ducklake-bench-") as tmp, postgres_server(fsync=True) as pg:
        root = Path(tmp)
        env = {**pg.env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

        def stores(tag: str) -> dict[str, dict[str, Any]]:
            (root / tag).mkdir()
            return {
                "duckdb": {"kind": "duckdb", "path": str(root / tag / "single.duckdb")},
                "ducklake": {"kind": "ducklake", "catalog": pg.new_catalog(f"lake_{tag}"),
                             "password_env": pg.password_env, "data_path": str(root / tag / "lake"),
                             "work_path": str(root / tag / "work")},
            }  # fmt: skip

        runs = {}
        for kind, store in stores("pipeline").items():
            progress(f"ducklake bench: pipeline on {kind} ({n} samples)")
            folder = root / f"pipeline-{kind}"
            folder.mkdir()
            runs[kind] = child(python, ["pipeline", json.dumps(store), str(folder), str(n)], env)
            progress(f"ducklake bench: pipeline on {kind}: {runs[kind]}")
        file_run, lake_run = runs["duckdb"], runs["ducklake"]
        same = all(file_run[t] == lake_run[t] for t in ("samples", "embeddings", "text_stats", "selections"))
        result.add("pipeline wall time (ingest, embedding, text_stats, k-center)", file_run["seconds"],
                   lake_run["seconds"], "s", "DuckLake within 1.3x of the file (issue #22; ratio >= 0.77)",
                   file_run["seconds"] / lake_run["seconds"] >= 0.77)  # fmt: skip
        result.add("pipeline peak RSS", file_run["peak_mb"], lake_run["peak_mb"], "MB",
                   "DuckLake within 1.2x (ratio >= 0.83)", file_run["peak_mb"] / lake_run["peak_mb"] >= 0.83)  # fmt: skip
        result.notes.append(
            f"row counts {'identical' if same else 'DIFFER'} in both stores: {lake_run['samples']} samples, "
            f"{lake_run['embeddings']} embeddings, {lake_run['text_stats']} text_stats rows, "
            f"{lake_run['selections']} k-center members"
            + ("" if quick else " (the packaged ShareGPT file holds 17,671 complete records; validation keeps these)")
        )
        rates: dict[tuple[str, int], float] = {}
        for n_writers in WRITERS:
            for kind, store in stores(f"w{n_writers}").items():
                progress(f"ducklake bench: {n_writers} writer(s) on {kind}")
                rates[kind, n_writers] = writers(python, store, n_writers, commits, env, root)
            result.add(f"commits/s, {n_writers} writer process(es), {CHUNK_ROWS:,}-row chunks",
                       rates["duckdb", n_writers], rates["ducklake", n_writers], "commits/s",
                       "reported (DuckLake's gain is writers on many machines; a file has one writer at a time)",
                       None, higher_is_better=True)  # fmt: skip
    result.notes.append(
        f"commit rows are {CHUNK_ROWS:,} embeddings of {DIM} floats ({CHUNK_ROWS * DIM * 4 / 1e6:.1f} MB) each; "
        f"{commits} commits per writer; the DuckDB file's writers take turns on its write lock"
    )
    result.notes.append(
        f"this machine: {os.cpu_count()} CPU cores shared with other jobs (load average {os.getloadavg()[0]:.0f} "
        "at the end; PostgreSQL, the writers and the pipeline compete for them), so the writer rows measure "
        "contention as much as the stores; rerun on a machine with spare cores for the scaling figure"
    )
    return result


def main(argv: list[str]) -> None:
    mode = argv[0] if argv else ""
    if mode == "pipeline":
        print(json.dumps(pipeline_main(json.loads(argv[1]), Path(argv[2]), int(argv[3]))))
    elif mode == "prepare":
        print(json.dumps(prepare_main(json.loads(argv[1]))))
    elif mode == "writer":
        print(json.dumps(writer_main(json.loads(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4]))))
    else:
        # SIGTERM (a timeout) unwinds like Ctrl-C, so the PostgreSQL server started here is stopped
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        print(run("--quick" in argv).markdown())


if __name__ == "__main__":
    main(sys.argv[1:])
