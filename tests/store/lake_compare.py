"""What the DuckLake pipeline tests (test_ducklake_pipeline.py, test_ducklake_object_storage.py) compare
between a pipeline on a DuckDB file and the same pipeline on a lake: the selections both pipelines end
with, and the tables read back from either store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

SELECTIONS = [
    {"name": "random_pick", "kind": "random", "budget": 12, "seed": 3},
    {"name": "longest", "kind": "top_score", "stage": "lengths", "column": "output_words", "budget": 5},
]


def store_tables(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Samples, text_stats rows, selections and stage runs (with their shard), each in one order."""
    return {
        "samples": con.execute("SELECT sample_id, source, active FROM samples ORDER BY ALL").fetchall(),
        "lengths": con.execute("SELECT * EXCLUDE (stage) FROM text_stats ORDER BY sample_id").fetchall(),
        "selections": con.execute(
            "SELECT selection, sample_id, rank, score, config_hash FROM selections ORDER BY ALL"
        ).fetchall(),
        "runs": con.execute(
            "SELECT stage, kind, config_hash, rows_in, rows_out, json_extract_string(stats, '$.shard') "
            "FROM stage_runs ORDER BY ALL"
        ).fetchall(),
    }
