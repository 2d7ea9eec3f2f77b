"""DuckLake probe (#22, first step): can a DuckLake catalog in PostgreSQL serve as the shared store?

Measured, not assumed: the packaged extensions (`duckdb-extension-ducklake`,
`duckdb-extension-postgres` from PyPI) are LOADed from their wheels with autoinstall and
autoload off (nothing is downloaded); Debian's PostgreSQL is started by `initdb` in a temporary
folder as an unprivileged user, listening on 127.0.0.1 only, with a random password that only
travels in PGPASSWORD (libpq reads it; the ATTACH string names no secret). Then:

- which SQL the project's store uses works on a DuckLake table (PRIMARY KEY, ON CONFLICT,
  views, ARRAY/LIST/MAP/STRUCT/JSON columns, ALTER TABLE ADD COLUMN IF NOT EXISTS, ...);
- commit throughput of 1, 2 and 4 writer processes appending to one table, each commit one
  shard-sized chunk in its own transaction, read back for lost or doubled rows, against the
  same loop on a single DuckDB file (one writer);
- what a write-write conflict does (the error text) and whether retrying the transaction
  succeeds;
- whether the packaged extension loads into another DuckDB (`--other-python`, e.g. the
  project's venv with DuckDB 2.0).

Run it with a Python that has duckdb==1.5.5 and both extension packages:
    python bench/ducklake_probe.py [--other-python .venv/bin/python] [--out bench/results/ducklake_probe.md]
It exits 0 with a SKIP line when PostgreSQL or the extension packages are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the project root's tests/
from tests.support.postgres import postgres_bin, postgres_missing, postgres_server

ROWS_PER_COMMIT = 200  # one shard chunk: sample_id, a score, a 384-d embedding
DIM = 384


def extension_file(package: str) -> Path | None:
    """The .duckdb_extension file inside an installed `duckdb-extension-*` wheel."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).glob("extensions/*/*.duckdb_extension"))
    return found[0] if found else None


def extension_links(folder: Path) -> dict[str, Path] | None:
    """LOAD derives the init symbol from the file name; the postgres wheel ships `postgres.duckdb_extension`
    but the extension is `postgres_scanner`, so each file is linked under its extension's name."""
    ducklake = extension_file("duckdb_extension_ducklake")
    postgres = extension_file("duckdb_extension_postgres")
    if ducklake is None or postgres is None:
        return None
    files = {"ducklake": ducklake, "postgres_scanner": postgres}
    folder.mkdir(parents=True, exist_ok=True)
    links = {}
    for name, path in files.items():
        link = folder / f"{name}.duckdb_extension"
        if not link.exists():
            link.symlink_to(path)
        links[name] = link
    return links


def connect(links: dict[str, Path], ext_dir: Path):
    import duckdb

    con = duckdb.connect(
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "extension_directory": str(ext_dir),  # empty: proves nothing comes from ~/.duckdb
        }
    )
    for link in links.values():
        con.execute(f"LOAD '{link}'")
    return con


def attach_sql(catalog: str, data_path: Path) -> str:
    # No password here: libpq takes it from PGPASSWORD.
    return f"ATTACH 'ducklake:{catalog}' AS lake (DATA_PATH '{data_path}/')"


# -- measurements -------------------------------------------------------------------------------

FEATURES: list[tuple[str, list[str]]] = [
    ("CREATE TABLE with PRIMARY KEY", ["CREATE TABLE lake.f_pk (sample_id VARCHAR PRIMARY KEY, x DOUBLE)"]),
    ("CREATE TABLE with UNIQUE", ["CREATE TABLE lake.f_uq (sample_id VARCHAR UNIQUE, x DOUBLE)"]),
    ("CREATE TABLE with NOT NULL", ["CREATE TABLE lake.f_nn (sample_id VARCHAR NOT NULL, x DOUBLE)"]),
    ("CREATE TABLE IF NOT EXISTS", ["CREATE TABLE IF NOT EXISTS lake.t (sample_id VARCHAR, x DOUBLE)"] * 2),
    ("column DEFAULT", ["CREATE TABLE lake.f_def (sample_id VARCHAR, n INTEGER DEFAULT 0)"]),
    ("FLOAT[384] (ARRAY)", ["CREATE TABLE lake.f_arr (e FLOAT[384])", "INSERT INTO lake.f_arr SELECT range(384)"]),
    ("FLOAT[] / VARCHAR[] (LIST)", ["CREATE TABLE lake.f_list (e FLOAT[], v VARCHAR[])"]),
    ("JSON", ["CREATE TABLE lake.f_json (j JSON)", "INSERT INTO lake.f_json VALUES ('{\"a\": 1}')"]),
    ("MAP", ["CREATE TABLE lake.f_map (m MAP(VARCHAR, DOUBLE))"]),
    ("STRUCT", ["CREATE TABLE lake.f_struct (s STRUCT(a INTEGER, b VARCHAR))"]),
    ("ALTER TABLE ADD COLUMN IF NOT EXISTS", ["ALTER TABLE lake.t ADD COLUMN IF NOT EXISTS y VARCHAR"] * 2),
    ("INSERT ... ON CONFLICT DO NOTHING", ["INSERT INTO lake.t VALUES ('a', 1, NULL) ON CONFLICT DO NOTHING"]),
    (
        "INSERT ... ON CONFLICT (key) DO UPDATE",
        ["INSERT INTO lake.t VALUES ('a', 1, NULL) ON CONFLICT (sample_id) DO UPDATE SET x = excluded.x"],
    ),
    ("INSERT OR REPLACE", ["INSERT OR REPLACE INTO lake.t VALUES ('a', 2, NULL)"]),
    (
        "MERGE INTO (upsert without a key)",
        [
            "MERGE INTO lake.t USING (SELECT 'a' AS sample_id, 3.0 AS x) AS s USING (sample_id) "
            "WHEN MATCHED THEN UPDATE SET x = s.x WHEN NOT MATCHED THEN INSERT (sample_id, x) VALUES (s.sample_id, s.x)"
        ],
    ),
    ("UPDATE / DELETE", ["UPDATE lake.t SET x = 4 WHERE sample_id = 'a'", "DELETE FROM lake.t WHERE x < 0"]),
    (
        "INSERT ... ANTI JOIN (new samples only)",
        [
            "INSERT INTO lake.t SELECT s.sample_id, 1, NULL FROM (SELECT 'b' AS sample_id) AS s "
            "ANTI JOIN lake.t AS e ON e.sample_id = s.sample_id"
        ],
    ),
    ("CREATE OR REPLACE VIEW", ["CREATE OR REPLACE VIEW lake.v AS SELECT * FROM lake.t"] * 2),
    ("CREATE SEQUENCE", ["CREATE SEQUENCE lake.s"]),
    ("CREATE INDEX", ["CREATE INDEX ix ON lake.t (sample_id)"]),
]


def feature_matrix(con) -> list[tuple[str, str]]:
    results = []
    for name, statements in FEATURES:
        try:
            for statement in statements:
                con.execute(statement)
            results.append((name, "works"))
        except Exception as err:  # noqa: BLE001 - the error text is the measurement
            results.append((name, "fails: " + " ".join(str(err).split())[:160]))
    return results


SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
_TABLE_KEY = re.compile(r",\s*(PRIMARY KEY|UNIQUE)\s*\([^)]*\)", re.IGNORECASE)
_COLUMN_KEY = re.compile(r"\s+(PRIMARY KEY|UNIQUE)\b", re.IGNORECASE)


def project_schema(con) -> list[tuple[str, str]]:
    """The project's own DDL (sql/schema, then sql/views/static) on the lake (`USE lake`), with
    PRIMARY KEY/UNIQUE stripped, the one change DuckLake forces on it."""
    import duckdb

    con.execute("USE lake")
    files = [
        *sorted((SQL_DIR / "schema").glob("*.sql")),
        *sorted((SQL_DIR / "schema" / "stages").glob("*.sql")),
        *sorted((SQL_DIR / "views" / "static").glob("*.sql")),
    ]
    results = []
    for path in files:
        text = _COLUMN_KEY.sub("", _TABLE_KEY.sub("", path.read_text(encoding="utf-8")))
        try:
            for statement in duckdb.extract_statements(text):
                con.execute(statement)
            results.append((str(path.relative_to(SQL_DIR)), "works"))
        except Exception as err:  # noqa: BLE001 - the error text is the measurement
            results.append((str(path.relative_to(SQL_DIR)), "fails: " + " ".join(str(err).split())[:200]))
    con.execute("USE memory")
    return results


def writer(
    links: dict[str, Path], ext_dir: Path, attach: str, worker: int, commits: int, rows: int, table: str
) -> dict[str, float]:
    """One writer process: `commits` transactions, each appending `rows` rows to `table`; returns its timings."""
    import numpy as np

    con = connect(links, ext_dir)
    t0 = time.perf_counter()
    con.execute(attach)
    attach_s = time.perf_counter() - t0
    rng = np.random.default_rng(worker)
    retries = 0
    t0 = time.perf_counter()
    for commit in range(commits):
        ids = [f"w{worker}-c{commit}-{i}" for i in range(rows)]
        chunk = {
            "sample_id": ids,
            "score": rng.random(rows),
            "emb": list(rng.random((rows, DIM))),
        }
        import pyarrow as pa

        chunk_rows = pa.table(chunk)  # noqa: F841 - read by DuckDB's replacement scan
        while True:
            try:
                con.begin()
                con.execute(f"INSERT INTO lake.{table} SELECT sample_id, score, emb::FLOAT[] FROM chunk_rows")
                con.commit()
                break
            except Exception:
                con.rollback()
                retries += 1
                if retries > 50 * commits:
                    raise
    return {"attach_s": attach_s, "write_s": time.perf_counter() - t0, "retries": retries}


def writer_main(argv: list[str]) -> None:
    import json

    links = {"ducklake": Path(argv[0]), "postgres_scanner": Path(argv[1])}
    out = writer(links, Path(argv[2]), argv[3], int(argv[4]), int(argv[5]), int(argv[6]), argv[7])
    print(json.dumps(out))


def throughput(
    links, ext_dir: Path, attach: str, n_writers: int, commits: int, rows: int, table: str
) -> dict[str, float]:
    import json

    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--writer",
                str(links["ducklake"]),
                str(links["postgres_scanner"]),
                str(ext_dir),
                attach,
                str(n_writers * 100 + w),
                str(commits),
                str(rows),
                table,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(n_writers)
    ]
    t0 = time.perf_counter()
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a writer failed")
    # Throughput over the writing phase: all writers are attached before their loops overlap.
    write_s = max(o["write_s"] for o in outs)
    return {
        "wall_s": time.perf_counter() - t0,
        "write_s": write_s,
        "commits_per_s": n_writers * commits / write_s,
        "attach_s": max(o["attach_s"] for o in outs),
        "retries": sum(o["retries"] for o in outs),
    }


def single_file_baseline(root: Path, commits: int, rows: int) -> float:
    """The same commit loop on a plain DuckDB file (today's store), one writer: commits/s."""
    import duckdb
    import numpy as np
    import pyarrow as pa

    con = duckdb.connect(str(root / f"single_{rows}.duckdb"))
    con.execute("CREATE TABLE rows (sample_id VARCHAR, score DOUBLE, emb FLOAT[])")  # as on DuckLake
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for commit in range(commits):
        chunk_rows = pa.table(  # noqa: F841 - read by DuckDB's replacement scan
            {
                "sample_id": [f"c{commit}-{i}" for i in range(rows)],
                "score": rng.random(rows),
                "emb": list(rng.random((rows, DIM))),
            }
        )
        con.begin()
        con.execute("INSERT INTO rows SELECT sample_id, score, emb::FLOAT[] FROM chunk_rows")
        con.commit()
    elapsed = time.perf_counter() - t0
    con.close()
    return commits / elapsed


def conflicts(links, ext_dir: Path, attach: str) -> list[tuple[str, str, str]]:
    """Two independent DuckDB instances on one catalog, interleaved by hand: (case, second commit, retry)."""
    a, b = connect(links, ext_dir), connect(links, ext_dir)
    a.execute(attach)
    b.execute(attach)
    a.execute("CREATE TABLE lake.cfl (sample_id VARCHAR, x DOUBLE)")
    a.execute("INSERT INTO lake.cfl SELECT 's' || i, i FROM range(100) t(i)")
    cases = [
        (
            "both append to one table",
            "INSERT INTO lake.cfl VALUES ('a1', 1)",
            "INSERT INTO lake.cfl VALUES ('b1', 1)",
        ),
        (
            "both update the same rows",
            "UPDATE lake.cfl SET x = x + 1 WHERE sample_id = 's1'",
            "UPDATE lake.cfl SET x = x + 10 WHERE sample_id = 's1'",
        ),
        (
            "both delete (replace a selection)",
            "DELETE FROM lake.cfl WHERE sample_id = 's2'",
            "DELETE FROM lake.cfl WHERE sample_id = 's3'",
        ),
        (
            "both create the same table",
            "CREATE TABLE lake.dup (x INTEGER)",
            "CREATE TABLE lake.dup (x INTEGER)",
        ),
    ]
    results = []
    for name, first, second in cases:
        a.begin()
        b.begin()
        a.execute(first)
        try:
            b.execute(second)
            statement_error = None
        except Exception as err:  # noqa: BLE001
            statement_error = err
        a.commit()
        if statement_error is None:
            try:
                b.commit()
                results.append((name, "commits", "-"))
                continue
            except Exception as err:  # noqa: BLE001 - the error text is the measurement
                error = err
        else:
            error = statement_error
        with contextlib.suppress(Exception):
            b.rollback()
        text = " ".join(str(error).split())[:220]
        try:
            b.begin()
            b.execute(second)
            b.commit()
            retry = "retry succeeds"
        except Exception as err:  # noqa: BLE001
            with contextlib.suppress(Exception):
                b.rollback()
            retry = "retry fails: " + " ".join(str(err).split())[:120]
        results.append((name, f"{type(error).__name__}: {text}", retry))
    final = a.execute("SELECT count(*), sum(x) FROM lake.cfl").fetchone()
    results.append(("state after the cases (count, sum x)", str(final), "-"))
    return results


def other_python_load(other: str, links: dict[str, Path]) -> str:
    code = (
        "import duckdb, sys; print('duckdb', duckdb.__version__); "
        "con = duckdb.connect(config={'autoinstall_known_extensions': False, 'autoload_known_extensions': False}); "
        f"con.execute(\"LOAD '{links['ducklake']}'\"); print('loaded')"
    )
    done = subprocess.run([other, "-c", code], check=False, capture_output=True, text=True)
    text = (done.stdout + done.stderr).strip().splitlines()
    return " / ".join(line for line in text if line.strip())[-400:]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer_main(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--commits", type=int, default=60, help="commits per writer")
    parser.add_argument("--other-python", help="a Python with another DuckDB (e.g. .venv/bin/python)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ducklake_probe.md")
    args = parser.parse_args()
    if importlib.util.find_spec("duckdb") is None:
        print("SKIP: duckdb is not installed in this Python")
        return 0
    missing = postgres_missing()
    bindir = postgres_bin()
    if missing or bindir is None:
        print(f"SKIP: {missing}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="ducklake_probe_"))
    try:
        return probe(args, bindir, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the server's data, the lake, the extension links


def probe(args: argparse.Namespace, bindir: Path, root: Path) -> int:
    import duckdb

    root.chmod(0o755)
    ext_dir = root / "no_extensions"
    links = extension_links(root / "ext")
    if links is None:
        print(
            f"SKIP: duckdb {duckdb.__version__} without duckdb-extension-ducklake/-postgres: "
            "pip install duckdb==1.5.5 duckdb-extension-ducklake==1.5.5 duckdb-extension-postgres==1.5.5"
        )
        return 0
    lines = [
        "# DuckLake probe (#22)",
        "",
        f"Written by `bench/ducklake_probe.py` on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"PostgreSQL {bindir.parent.name} (Debian), catalog on 127.0.0.1, data files on local disk.",
        "",
        f"Extensions LOADed from the wheels (autoinstall/autoload off, empty extension_directory): "
        f"`{links['ducklake'].resolve()}`, `{links['postgres_scanner'].resolve()}`.",
        "",
    ]
    try:
        # tests/support/postgres.py: initdb as an unprivileged user, 127.0.0.1, a random password
        with postgres_server(fsync=True) as pg:
            os.environ["PGPASSWORD"] = pg.password  # libpq (inside the postgres extension) reads it
            data_path = root / "data"
            data_path.mkdir()
            attach = attach_sql(pg.catalog, data_path)
            con = connect(links, ext_dir)
            con.execute(attach)
            # DuckLake has no fixed-size ARRAY (see the feature table): the embedding is a LIST
            for table in ("rows", "tiny"):
                con.execute(f"CREATE TABLE lake.{table} (sample_id VARCHAR, score DOUBLE, emb FLOAT[])")
            lines += ["## SQL the store uses, on a DuckLake table", "", "| feature | result |", "|---|---|"]
            lines += [f"| {name} | {result} |" for name, result in feature_matrix(con)]
            schema = project_schema(con)
            broken = [(name, result) for name, result in schema if result != "works"]
            lines += [
                "",
                f"## The project's DDL on DuckLake (PRIMARY KEY/UNIQUE stripped): "
                f"{len(schema) - len(broken)} of {len(schema)} files work",
                "",
            ]
            lines += [f"- `{name}`: {result}" for name, result in broken]
            con.close()
            lines += [
                "",
                f"## Commit throughput ({args.commits} commits per writer; a row is (sample_id, score, "
                f"{DIM} floats as FLOAT[]))",
                "",
                "| store | rows per commit | writers | commits/s (all writers) | attach s | retried commits "
                "| rows read back | expected |",
                "|---|---|---|---|---|---|---|---|",
            ]
            files_after: dict[int, int] = {}
            for rows, table in ((ROWS_PER_COMMIT, "rows"), (1, "tiny")):
                baseline = single_file_baseline(root, args.commits, rows)
                lines.append(f"| single DuckDB file | {rows} | 1 | {baseline:.1f} | - | - | - | - |")
                expected = 0
                for n in (1, 2, 4):
                    measured = throughput(links, ext_dir, attach, n, args.commits, rows, table)
                    expected += n * args.commits * rows
                    check = connect(links, ext_dir)
                    check.execute(attach)
                    got, distinct = check.execute(
                        f"SELECT count(*), count(DISTINCT sample_id) FROM lake.{table}"
                    ).fetchall()[0]
                    check.close()
                    ok = "yes" if got == distinct == expected else f"NO ({distinct} distinct)"
                    lines.append(
                        f"| DuckLake (Postgres catalog) | {rows} | {n} | {measured['commits_per_s']:.1f} | "
                        f"{measured['attach_s']:.2f} | {measured['retries']} | {got} | {expected} {ok} |"
                    )
                files_after[rows] = len(list(data_path.rglob("*.parquet")))
            lines += [
                "",
                f"Data files: {files_after[ROWS_PER_COMMIT]} Parquet files after the {ROWS_PER_COMMIT}-row commits, "
                f"{files_after[1]} after the 1-row commits as well (small inserts are inlined into the catalog); "
                "compaction is `CALL ducklake_merge_adjacent_files('lake')`.",
                "",
                "## Write-write conflicts (two DuckDB instances, second commits after the first)",
                "",
                "| case | second transaction | retry of the second |",
                "|---|---|---|",
            ]
            lines += [f"| {c} | {r} | {retry} |" for c, r, retry in conflicts(links, ext_dir, attach)]
    except RuntimeError as err:
        if "PostgreSQL" not in str(err):
            raise
        print(f"SKIP: PostgreSQL did not start: {str(err)[-400:]}")
        return 0
    finally:
        os.environ.pop("PGPASSWORD", None)
    if args.other_python:
        lines += [
            "",
            "## The packaged DuckLake extension in another DuckDB",
            "",
            f"`{args.other_python}`: {other_python_load(args.other_python, links)}",
        ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
