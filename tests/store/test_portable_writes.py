"""The five keyed writes run unchanged on a store without PRIMARY KEY/UNIQUE (issue #22: DuckLake has
none) and do what their ON CONFLICT predecessors did on the DuckDB file.

Each write is applied twice (a second round that overlaps the first, changes values and repeats a
key) on three DuckDB files: the project's SQL on the real schema, the same SQL on the schema with
every PRIMARY KEY/UNIQUE removed (what DuckLake sees), and the ON CONFLICT texts they replaced
(kept below as the reference) on the real schema. All three must end with the same rows, and the
unconstrained one with no key twice.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from curation_assets.store.sql_files import SQL_DIR, core_schema_files, execute_sql_file, read_sql

SCHEMA_FILES = [*core_schema_files(), "schema/stages/lora_warmup.sql", "schema/stages/lift_expand.sql"]
T1, T2 = dt.datetime(2026, 1, 1, 12), dt.datetime(2026, 1, 2, 12)

# The writes before issue #22 (ON CONFLICT needs a PRIMARY KEY): the reference behaviour.
REFERENCE = {
    "writes/llm_cache_insert.sql": """
INSERT INTO llm_cache
SELECT request_hash, model, request::JSON, response, finish_reason, prompt_tokens, completion_tokens,
       latency_s, created_at
FROM new_llm_answers
ON CONFLICT (request_hash) DO NOTHING;""",
    "writes/ingest_merge.sql": """
INSERT INTO samples
SELECT s.sample_id, $source, s.format, s.instruction, s.input, s.output, s.messages,
       s.n_turns, NULL, s.raw_record::JSON, $now, TRUE
FROM read_parquet($samples_file) AS s
ANTI JOIN samples AS existing ON existing.sample_id = s.sample_id;
INSERT INTO source_samples
SELECT $source, c.sample_id, c.n_records, s.first_record_no, $now, $now, TRUE
FROM read_parquet($counts_file) AS c
JOIN read_parquet($samples_file) AS s USING (sample_id)
ON CONFLICT (source, sample_id) DO UPDATE
SET n_records = excluded.n_records, first_record_no = excluded.first_record_no,
    last_seen = excluded.last_seen, active = TRUE;
UPDATE source_samples SET active = FALSE
WHERE source = $source AND active
  AND sample_id NOT IN (SELECT sample_id FROM read_parquet($counts_file));
UPDATE samples SET active = EXISTS (
    SELECT 1 FROM source_samples AS ss WHERE ss.sample_id = samples.sample_id AND ss.active)
WHERE parent_id IS NULL
  AND sample_id IN (SELECT sample_id FROM source_samples WHERE source = $source);
DELETE FROM rejected_samples WHERE source = $source;
INSERT INTO rejected_samples
SELECT $source, r.source_file, r.record_no, r.location, r.reason, r.raw_record, $now
FROM read_parquet($rejected_file) AS r;""",
    "writes/lift_expand_merge.sql": """
INSERT INTO samples
SELECT g.sample_id, $stage, 'generated', g.instruction, '', g.output, g.messages, 1, g.parent_id,
       g.raw_record::JSON, $now, TRUE
FROM read_parquet($samples_file) AS g
ANTI JOIN samples AS existing ON existing.sample_id = g.sample_id;
INSERT INTO source_samples
SELECT $stage, g.sample_id, 1, 0, $now, $now, TRUE
FROM read_parquet($samples_file) AS g
ON CONFLICT (source, sample_id) DO UPDATE SET last_seen = excluded.last_seen, active = TRUE;
UPDATE source_samples SET active = sample_id IN (
    SELECT child_id FROM lift_expand
    WHERE stage = $stage AND config_hash = $config_hash AND child_id IS NOT NULL)
WHERE source = $stage;""",
    "writes/lora_checkpoint_insert.sql": """
INSERT INTO lora_checkpoints VALUES ($stage, $config_hash, $epoch, $path, $adapter_sha256, $optimizer_sha256,
                                     $mean_lr, $now)
ON CONFLICT (stage, config_hash, epoch) DO UPDATE SET path = excluded.path,
    adapter_sha256 = excluded.adapter_sha256, optimizer_sha256 = excluded.optimizer_sha256,
    mean_lr = excluded.mean_lr, created_at = excluded.created_at;""",
    "writes/trained_scorer_insert.sql": """
INSERT INTO trained_scorers VALUES ($stage, $config_hash, $scorer, $backend, $path, $files, $n_train, $n_heldout,
                                    $heldout_spearman, $heldout_mae, $details, $now)
ON CONFLICT (stage, config_hash, scorer) DO UPDATE SET backend = excluded.backend, path = excluded.path,
    files = excluded.files, n_train = excluded.n_train, n_heldout = excluded.n_heldout,
    heldout_spearman = excluded.heldout_spearman, heldout_mae = excluded.heldout_mae,
    details = excluded.details, created_at = excluded.created_at;""",
}

KEYS = {
    "llm_cache": ["request_hash"],
    "samples": ["sample_id"],
    "source_samples": ["source", "sample_id"],
    "rejected_samples": ["source", "record_no"],
    "lora_checkpoints": ["stage", "config_hash", "epoch"],
    "trained_scorers": ["stage", "config_hash", "scorer"],
}


def without_constraints(ddl: str) -> str:
    """The DDL as DuckLake takes it: no table-level PRIMARY KEY (...)/UNIQUE (...), no inline ones."""
    ddl = re.sub(r",\s*(PRIMARY KEY|UNIQUE)\s*\([^)]*\)", "", ddl)
    return re.sub(r"\s+(PRIMARY KEY|UNIQUE)\b", "", ddl)


def run_text(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> None:
    for statement in duckdb.extract_statements(sql):
        con.execute(statement, {k: params[k] for k in statement.named_parameters} or None)


def make_db(path: Path, constrained: bool) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    for relative in SCHEMA_FILES:
        ddl = read_sql(relative)
        run_text(con, ddl if constrained else without_constraints(ddl), {})
    keyed = con.execute(
        "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
    ).fetchall()[0][0]
    assert (keyed > 0) == constrained
    return con


def parquet(con: duckdb.DuckDBPyConnection, path: Path, select: str) -> str:
    con.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
    return str(path)


def _messages(text: str) -> str:
    return f"[{{'role': 'user', 'content': '{text}'}}, {{'role': 'assistant', 'content': 'a {text}'}}]"


def ingest_round(con: duckdb.DuckDBPyConnection, folder: Path, ids: list[tuple[str, int]], now: dt.datetime) -> dict:
    """Staged ingest files for (sample_id, n_records) pairs, as sources/ingest.py writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ", ".join(f"('{i}', {n}, {k})" for k, (i, n) in enumerate(ids))
    staged = f"SELECT * FROM (VALUES {rows}) AS v(sample_id, n_records, k)"
    return {
        "source": "pool",
        "now": now,
        "samples_file": parquet(
            con,
            folder / "samples.parquet",
            f"SELECT sample_id, 'alpaca' AS format, 'q ' || sample_id AS instruction, '' AS input, "
            f"'a ' || sample_id AS output, {_messages('x')}::STRUCT(role VARCHAR, content VARCHAR)[] AS messages, "
            f"1 AS n_turns, '{{}}' AS raw_record, k + 1 AS first_record_no FROM ({staged})",
        ),
        "counts_file": parquet(con, folder / "counts.parquet", f"SELECT sample_id, n_records FROM ({staged})"),
        "rejected_file": parquet(
            con,
            folder / "rejected.parquet",
            f"SELECT 'pool.jsonl' AS source_file, {len(ids) + 1}::BIGINT AS record_no, 'line {len(ids) + 1}' "
            "AS location, 'no instruction' AS reason, '{}' AS raw_record",
        ),
    }


def lift_round(con: duckdb.DuckDBPyConnection, folder: Path, children: list[str], now: dt.datetime) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    con.execute("DELETE FROM lift_expand WHERE stage = 'lift'")
    for r, child in enumerate(children):
        con.execute("INSERT INTO lift_expand VALUES ('lift', 'h1', 's1', ?, ?, 'ok', 'q', NULL)", [r + 1, child])
    values = ", ".join(f"('{c}')" for c in children)
    return {
        "stage": "lift",
        "config_hash": "h1",
        "now": now,
        "samples_file": parquet(
            con,
            folder / "generated.parquet",
            f"SELECT c AS sample_id, 's1' AS parent_id, 'q ' || c AS instruction, 'a ' || c AS output, "
            f"{_messages('g')}::STRUCT(role VARCHAR, content VARCHAR)[] AS messages, '{{}}' AS raw_record "
            f"FROM (VALUES {values}) AS v(c)",
        ),
    }


def answers(rows: list[tuple[str, str, dt.datetime]]) -> pa.Table:
    return pa.table(
        {
            "request_hash": [r[0] for r in rows],
            "model": ["m"] * len(rows),
            "request": ['{"messages": []}'] * len(rows),
            "response": [r[1] for r in rows],
            "finish_reason": ["stop"] * len(rows),
            "prompt_tokens": pa.array([3] * len(rows), pa.int32()),
            "completion_tokens": pa.array([4] * len(rows), pa.int32()),
            "latency_s": [0.5] * len(rows),
            "created_at": [r[2] for r in rows],
        }
    )


def apply(con: duckdb.DuckDBPyConnection, write: str, params: dict, reference: bool) -> None:
    con.begin()
    if reference:
        run_text(con, REFERENCE[write], params)
    else:
        execute_sql_file(con, write, params)
    con.commit()


def scenario_llm_cache(con, folder, write_once: Callable[[dict], None]) -> list[str]:
    con.register("new_llm_answers", answers([("a", "first a", T1), ("b", "first b", T1)]))
    write_once({})
    # b again (a second worker answered it too), c twice in one batch: the earlier answer is kept
    con.register("new_llm_answers", answers([("b", "second b", T2), ("c", "first c", T1), ("c", "later c", T2)]))
    write_once({})
    write_once({})  # the same batch again: nothing new
    con.unregister("new_llm_answers")
    return ["llm_cache"]


def scenario_ingest(con, folder, write_once) -> list[str]:
    write_once(ingest_round(con, folder / "r1", [("s1", 1), ("s2", 1), ("s3", 2)], T1))
    second = ingest_round(con, folder / "r2", [("s2", 3), ("s3", 2), ("s4", 1)], T2)  # s1 left the source
    write_once(second)
    write_once(second)  # a retried commit of the same staged ingest
    return ["samples", "source_samples", "rejected_samples"]


def scenario_lift(con, folder, write_once) -> list[str]:
    write_once(ingest_round(con, folder / "ingest", [("s1", 1)], T1))
    write_once(lift_round(con, folder / "r1", ["g1", "g2"], T1))
    second = lift_round(con, folder / "r2", ["g2", "g3"], T2)
    write_once(second)
    write_once(second)
    return ["samples", "source_samples"]


def scenario_lora(con, folder, write_once) -> list[str]:
    base = {"stage": "warm", "config_hash": "h", "optimizer_sha256": "o", "mean_lr": 1e-4}
    write_once({**base, "epoch": 1, "path": "p1", "adapter_sha256": "x1", "now": T1})
    write_once({**base, "epoch": 2, "path": "p2", "adapter_sha256": "x2", "now": T1})
    write_once({**base, "epoch": 1, "path": "p1-again", "adapter_sha256": "y1", "now": T2})  # re-trained epoch 1
    write_once({**base, "epoch": 1, "path": "p1-again", "adapter_sha256": "y1", "now": T2})
    return ["lora_checkpoints"]


def scenario_scorers(con, folder, write_once) -> list[str]:
    def record(scorer: str, spearman: float | None, now: dt.datetime) -> dict:
        return {
            "stage": "train",
            "config_hash": "h",
            "scorer": scorer,
            "backend": "embedding_head",
            "path": f"/w/{scorer}",
            "files": json.dumps({"head.npz": "abc"}),
            "n_train": 8,
            "n_heldout": 2,
            "heldout_spearman": spearman,
            "heldout_mae": 0.25,
            "details": json.dumps({"alpha": 1.0}),
            "now": now,
        }

    write_once(record("quality", 0.5, T1))
    write_once(record("complexity", None, T1))
    write_once(record("quality", 0.75, T2))
    write_once(record("quality", 0.75, T2))
    return ["trained_scorers"]


SCENARIOS = {
    "writes/llm_cache_insert.sql": scenario_llm_cache,
    "writes/ingest_merge.sql": scenario_ingest,
    "writes/lift_expand_merge.sql": scenario_lift,
    "writes/lora_checkpoint_insert.sql": scenario_lora,
    "writes/trained_scorer_insert.sql": scenario_scorers,
}


def table_rows(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


@pytest.mark.parametrize("write", sorted(SCENARIOS))
def test_keyed_write_runs_without_constraints_and_matches_on_conflict(tmp_path: Path, write: str) -> None:
    results = {}
    for name, constrained, reference in [("file", True, False), ("lake", False, False), ("before", True, True)]:
        con = make_db(tmp_path / f"{name}.duckdb", constrained)

        def write_once(params: dict, con=con, reference=reference) -> None:
            # the lift scenario ingests its parent first, with the same variant of the ingest write
            apply(con, "writes/ingest_merge.sql" if "counts_file" in params else write, params, reference)

        tables = SCENARIOS[write](con, tmp_path / name, write_once)
        results[name] = {t: table_rows(con, t) for t in tables}
        for table in tables:
            key = ", ".join(KEYS[table])
            twice = con.execute(f"SELECT {key}, count(*) FROM {table} GROUP BY ALL HAVING count(*) > 1").fetchall()
            assert twice == [], f"{name}: {table} holds a key twice: {twice}"
        con.close()
    assert results["file"] == results["before"], "the rewrite changed what the DuckDB file holds"
    assert results["lake"] == results["before"], "without constraints the rewrite stores other rows"
    assert any(results["before"].values())


def test_no_sql_file_needs_a_key_constraint() -> None:
    """No write in sql/ may rely on a PRIMARY KEY/UNIQUE (DuckLake has none): no ON CONFLICT, no
    INSERT OR REPLACE (comments aside)."""
    sql_dir = SQL_DIR
    offenders = []
    for path in sorted(sql_dir.rglob("*.sql")):
        code = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8")).upper()
        if re.search(r"\bON\s+CONFLICT\b|\bINSERT\s+OR\s+(REPLACE|IGNORE)\b", code):
            offenders.append(str(path.relative_to(sql_dir)))
    assert offenders == []


def test_expected_rows_of_the_scenarios(tmp_path: Path) -> None:
    """What the reference writes leave, spelled out for two scenarios (the comparison above is only as
    good as the scenarios)."""
    con = make_db(tmp_path / "x.duckdb", constrained=False)
    scenario_llm_cache(con, tmp_path, lambda p: apply(con, "writes/llm_cache_insert.sql", p, reference=False))
    assert con.execute("SELECT request_hash, response FROM llm_cache ORDER BY 1").fetchall() == [
        ("a", "first a"),
        ("b", "first b"),
        ("c", "first c"),
    ]
    scenario_ingest(con, tmp_path, lambda p: apply(con, "writes/ingest_merge.sql", p, reference=False))
    assert con.execute(
        "SELECT sample_id, n_records, first_seen, last_seen, active FROM source_samples ORDER BY 1"
    ).fetchall() == [
        ("s1", 1, T1, T1, False),
        ("s2", 3, T1, T2, True),
        ("s3", 2, T1, T2, True),
        ("s4", 1, T2, T2, True),
    ]
