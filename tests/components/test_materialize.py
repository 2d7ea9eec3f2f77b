"""Materialise whole pipelines with dagster.materialize (reruns through the runner) and check what
lands in DuckDB."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from tests.support.runs import run_pipeline

DEMO = Path(__file__).resolve().parents[2] / "curation_assets" / "defs" / "demo" / "defs.yaml"


@pytest.fixture
def tiny_model(tiny_sentence_model, tiny_lm) -> tuple[Path, Path]:
    """The session's tiny sentence model and tiny Llama (tests/conftest.py)."""
    return tiny_sentence_model, tiny_lm


def demo_copy(tmp_path: Path, limit: int, model: tuple[Path, Path]) -> Path:
    """The shipped demo on fewer records, with tiny random models instead of MiniLM and SmolLM2."""
    document = yaml.safe_load(DEMO.read_text())
    attributes = document["attributes"]
    for stage in attributes["stages"]:
        if stage["kind"] == "embedding":
            stage["model"] = str(model[0])
        if stage["kind"] == "lm_loss":
            stage["model"] = str(model[1])
    # the LLM-judged stages need the llama.cpp server: they run in the end-to-end demo test
    llm_stages = {s["name"] for s in attributes["stages"] if "alpagasus" in s["kind"] or "lift" in s["kind"]}
    attributes["stages"] = [s for s in attributes["stages"] if s["name"] not in llm_stages]
    attributes["selections"] = [s for s in attributes["selections"] if s.get("stage") not in llm_stages]
    attributes["duckdb_path"] = "demo.duckdb"
    attributes["sources"][0]["limit"] = limit
    for export in attributes["exports"]:
        export["path"] = f"exports/{export['selection']}.jsonl"
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def materialize(path: Path) -> tuple[dg.ExecuteInProcessResult, object]:
    component = load_pipeline_file(path)
    definitions = pipeline_definitions(component)
    result = dg.materialize(list(definitions.assets or []), resources=definitions.resources, raise_on_error=True)
    return result, component


def test_small_demo_materialises_every_asset_with_metadata_and_checks(tmp_path, tiny_model):
    result, component = materialize(demo_copy(tmp_path, limit=200, model=tiny_model))
    assert result.success
    materialized = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    assert set(materialized) == {
        "demo/sharegpt",
        "demo/lengths",
        "demo/embed",
        "demo/random_5pct",
        "demo/longest_answers",
        "demo/deita_diverse_5pct",
        "demo/dedup",
        "demo/kcenter_5pct",
        "demo/kmeans_coreset_5pct",
        "demo/deft_ucs_5pct",
        "demo/lift_variance",
        "demo/smollm_loss",
        "demo/hardest_for_smollm",
        "demo/judge_pool",
        "demo/export_random_5pct",
        "demo/export_kcenter_5pct",
    }
    for key in ("demo/sharegpt", "demo/lengths", "demo/random_5pct", "demo/longest_answers"):
        metadata = materialized[key]
        assert {"dagster/row_count", "dagster/table_name", "dagster/column_schema"} <= set(metadata)
    lineage = materialized["demo/lengths"]["dagster/column_lineage"].value
    assert lineage.deps_by_column["output_words"][0].column_name == "output"
    score_lineage = materialized["demo/longest_answers"]["dagster/column_lineage"].value.deps_by_column["score"]
    assert [(d.asset_key.to_user_string(), d.column_name) for d in score_lineage] == [("demo/lengths", "output_words")]
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    assert {c.check_name for c in checks} == {
        "counts_balance",
        "sample_ids_unique",
        "covers_active_samples",
        "members_are_active",
    }

    with component.store.reader() as con:
        samples = con.execute("SELECT count(*) FROM samples WHERE active").fetchall()[0][0]
        assert materialized["demo/sharegpt"]["dagster/row_count"].value == samples
        runs = dict(con.execute("SELECT stage, rows_out FROM stage_runs").fetchall())
        assert runs["lengths"] == samples
        assert runs["random_5pct"] == round(0.05 * samples)
        stats = con.execute(
            "SELECT stats->>'records_read', stats->>'rejected', stats->>'duplicates' "
            "FROM stage_runs WHERE stage = 'sharegpt'"
        ).fetchall()[0]
        assert int(stats[0]) == 200 and int(stats[0]) == samples + int(stats[1]) + int(stats[2])
        top = con.execute(
            "SELECT s.sample_id, sel.score, t.output_words FROM selections sel "
            "JOIN text_stats t USING (sample_id) JOIN samples s USING (sample_id) "
            "WHERE sel.selection = 'longest_answers' ORDER BY sel.rank"
        ).fetchall()
        assert all(score == words for _, score, words in top)
        assert [r[1] for r in top] == sorted((r[1] for r in top), reverse=True)
        assert all(score >= 20 for _, score, _ in top)
        # views: one per stage at its current config, and the wide sample_scores
        assert con.execute("SELECT count(*) FROM lengths").fetchall()[0][0] == samples
        wide = con.execute("SELECT * FROM sample_scores").fetchdf()
        assert len(wide) == samples
        assert {"lengths__output_words", "smollm_loss__loss", "in_random_5pct", "in_kcenter_5pct"} <= set(wide.columns)
        assert "embed__embedding" not in wide.columns and "embed__n_tokens" in wide.columns
        assert int(wide["in_random_5pct"].sum()) == runs["random_5pct"]
        summary = dict(con.execute("SELECT selection, size FROM selection_summary").fetchall())
        assert summary["random_5pct"] == runs["random_5pct"] and summary["longest_answers"] == 100
        overlap = con.execute(
            "SELECT shared, jaccard FROM selection_overlap WHERE selection_a = 'hardest_for_smollm' "
            "AND selection_b = 'kcenter_5pct'"
        ).fetchall()
        assert overlap and overlap[0][0] == summary["hardest_for_smollm"]  # a subset of the k-center members
        history = con.execute("SELECT stage FROM stage_history LIMIT 1").fetchall()
        assert history and history[0][0] in runs
        scored = wide[wide["smollm_loss__loss"].notna()]
        assert set(scored["sample_id"]) == set(wide[wide["in_kcenter_5pct"]]["sample_id"])
        # every example query in sql/queries runs on the demo database and returns its columns
        from curation_assets.store.sql_files import SQL_DIR

        queries = sorted((SQL_DIR / "queries").glob("*.sql"))
        assert len(queries) >= 12
        results = {q.name: con.execute(q.read_text()).fetchall() for q in queries}
        assert results["05_new_since_previous_ingest.sql"] == [("sharegpt", samples)]
        assert results["02_selections_at_a_glance.sql"] and results["08_latest_run_per_stage.sql"]
        assert results["03_in_kcenter_not_in_random.sql"]
        assert results["10_truncated_samples.sql"][0][2] == samples
    exported = (tmp_path / "exports" / "random_5pct.jsonl").read_text().splitlines()
    assert len(exported) == runs["random_5pct"]


def test_second_run_is_incremental_and_same_selection(tmp_path, tiny_model):
    path = demo_copy(tmp_path, limit=120, model=tiny_model)
    component = run_pipeline(load_pipeline_file(path))  # the runner: Dagster is the test above
    with component.store.reader() as con:
        first = con.execute("SELECT sample_id FROM selections WHERE selection = 'random_5pct' ORDER BY rank").fetchall()
    run_pipeline(load_pipeline_file(path))
    with component.store.reader() as con:
        runs = con.execute("SELECT stage, rows_out FROM stage_runs ORDER BY started_at").fetchall()
        second = con.execute(
            "SELECT sample_id FROM selections WHERE selection = 'random_5pct' ORDER BY rank"
        ).fetchall()
    by_stage: dict[str, list[int]] = {}
    for stage, rows_out in runs:
        by_stage.setdefault(stage, []).append(rows_out)
    assert by_stage["sharegpt"][1] == 0  # nothing new ingested
    assert by_stage["lengths"][1] == 0 and by_stage["embed"][1] == 0  # nothing recomputed
    assert first == second  # same seed, same pool


def test_growing_the_source_scores_only_new_samples(tmp_path, tiny_model):
    path = demo_copy(tmp_path, limit=100, model=tiny_model)
    run_pipeline(load_pipeline_file(path))  # the runner: Dagster is test_small_demo_materialises_every_asset...
    document = yaml.safe_load(path.read_text())
    document["attributes"]["sources"][0]["limit"] = 130
    path.write_text(yaml.safe_dump(document))
    component = run_pipeline(load_pipeline_file(path))
    with component.store.reader() as con:
        new_samples, computed = con.execute(
            "SELECT (SELECT rows_out FROM stage_runs WHERE stage = 'sharegpt' ORDER BY started_at DESC LIMIT 1), "
            "(SELECT rows_out FROM stage_runs WHERE stage = 'lengths' ORDER BY started_at DESC LIMIT 1)"
        ).fetchall()[0]
        total = con.execute("SELECT count(*) FROM text_stats").fetchall()[0][0]
        active = con.execute("SELECT count(*) FROM samples WHERE active").fetchall()[0][0]
    assert 0 < new_samples <= 30
    assert computed == new_samples
    assert total == active


@pytest.mark.e2e
def test_shipped_demo_pipeline_end_to_end(tmp_path, monkeypatch, llm_server):
    """The demo exactly as `make demo` runs it (2,000 ShareGPT conversations), into a temporary DuckDB,
    its LLM judges asking the packaged SmolLM2 served on a free port."""
    document = yaml.safe_load(DEMO.read_text())
    document["attributes"]["duckdb_path"] = str(tmp_path / "demo.duckdb")
    for stage in document["attributes"]["stages"]:
        if stage["kind"] in ("alpagasus", "lift_quality"):
            stage["llm"] = {"base_url": llm_server.base_url}
    for export in document["attributes"]["exports"]:
        export["path"] = str(tmp_path / f"{export['selection']}.jsonl")
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    # the demo names its store and judge as resources of the project's resources.py (found in a folder above)
    shutil.copy(DEMO.parent.parent / "resources.py", tmp_path / "resources.py")
    result, component = materialize(path)
    assert result.success
    with component.store.reader() as con:
        assert con.execute("SELECT count(*) FROM rejected_samples").fetchall()[0][0] > 0
        kept = con.execute("SELECT count(*) FROM samples").fetchall()[0][0]
        judged = con.execute(
            "SELECT (SELECT count(*) FROM judge_accuracy), (SELECT count(*) FROM judge_rubric), "
            "(SELECT count(*) FROM selections WHERE selection = 'lift_top4')"
        ).fetchall()[0]
        cached = con.execute("SELECT count(*) FROM llm_cache").fetchall()[0][0]
    assert 1_900 <= kept <= 2_000
    assert judged[:2] == (8, 8) and 1 <= judged[2] <= 4  # the 135M judge parses at least some rubrics
    assert cached >= 16
