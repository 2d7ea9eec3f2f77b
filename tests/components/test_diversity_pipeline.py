"""Embedding stage and the diversity selections on a tiny random model: end to end through Dagster,
then a rerun through the runner."""

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from tests.support.files import write_samples
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_pipeline


def pipeline(tmp_path: Path, model: Path) -> Path:
    document = pipeline_document(
        "div",
        stages=[{"name": "embed", "kind": "embedding", "model": str(model), "batch_size": 8}],
        selections=[
            {"name": "kcenter", "kind": "kcenter_greedy", "embedding": "embed", "budget": 10},
            {
                "name": "kcenter_more",
                "kind": "kcenter_greedy",
                "embedding": "embed",
                "budget": 15,
                "seed_selection": "kcenter",
            },
            {"name": "kmeans", "kind": "kmeans_coreset", "embedding": "embed", "fraction": 0.2, "n_clusters": 4},
            {"name": "deft", "kind": "deft_ucs", "embedding": "embed", "budget": 12, "n_clusters": 3},
            {"name": "lift", "kind": "lift_variance", "embedding": "embed"},
            {"name": "dedup", "kind": "near_dedup", "embedding": "embed", "threshold": 0.999},
            {
                "name": "kcenter_deduped",
                "kind": "kcenter_greedy",
                "embedding": "embed",
                "budget": 8,
                "input_selection": "dedup",
            },
        ],
        source_format="alpaca",
        automation=None,
    )
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run(path: Path):
    component = load_pipeline_file(path)
    result = dg.materialize(list(pipeline_definitions(component).assets), raise_on_error=True)
    assert all(c.passed for c in result.get_asset_check_evaluations())
    return component, result


def test_embeddings_and_selections(tmp_path, tiny_sentence_model):
    write_samples(tmp_path / "pool.jsonl", 60)
    component, result = run(pipeline(tmp_path, tiny_sentence_model))
    with component.store.reader() as con:
        ids, vectors = zip(*con.execute("SELECT sample_id, embedding FROM embeddings ORDER BY sample_id").fetchall())
        instructions = dict(con.execute("SELECT sample_id, instruction FROM samples").fetchall())
        sizes = dict(con.execute("SELECT selection, count(*) FROM selections GROUP BY 1").fetchall())
        seeded = [
            r[0]
            for r in con.execute(
                "SELECT sample_id FROM selections WHERE selection = 'kcenter_more' ORDER BY rank LIMIT 10"
            ).fetchall()
        ]
        first = [
            r[0]
            for r in con.execute(
                "SELECT sample_id FROM selections WHERE selection = 'kcenter' ORDER BY rank"
            ).fetchall()
        ]
        roles = dict(
            con.execute("SELECT role, count(*) FROM selection_details WHERE selection = 'deft' GROUP BY 1").fetchall()
        )
        dup = con.execute("SELECT related_id, value FROM selection_details WHERE selection = 'dedup'").fetchall()
    assert len(ids) == 61
    # stored vectors equal an independent encode of the same text with the same model
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(tiny_sentence_model), device="cpu").encode(
        [instructions[i] for i in ids], normalize_embeddings=True
    )
    assert np.allclose(np.array(vectors), reference, atol=1e-5)
    assert sizes["kcenter"] == 10 and sizes["kcenter_more"] == 15 and sizes["deft"] == 12
    assert sizes["kmeans"] == 12  # round(0.2 · 61)
    assert 11 <= sizes["lift"] <= 13  # rows above the 80th percentile of 61
    assert seeded == first  # seed members come first
    assert roles == {"easy": 6, "hard": 6}
    assert sizes["dedup"] == 61 - len(dup)
    with component.store.reader() as con:
        outside = con.execute(
            "SELECT count(*) FROM selections m WHERE selection = 'kcenter_deduped' AND sample_id "
            "NOT IN (SELECT sample_id FROM selections WHERE selection = 'dedup')"
        ).fetchall()[0][0]
    assert sizes["kcenter_deduped"] == 8 and outside == 0
    deps = {
        k.to_user_string()
        for k in pipeline_definitions(component)
        .resolve_asset_graph()
        .get(dg.AssetKey(["div", "kcenter_deduped"]))
        .parent_keys
    }
    assert {"div/dedup", "div/embed"} <= deps


def test_rerun_embeds_only_new_samples(tmp_path, tiny_sentence_model):
    write_samples(tmp_path / "pool.jsonl", 40)
    path = pipeline(tmp_path, tiny_sentence_model)
    component = run_pipeline(load_pipeline_file(path))  # the runner: Dagster is test_embeddings_and_selections
    write_samples(tmp_path / "pool.jsonl", 5, start=1000)
    run_pipeline(load_pipeline_file(path))
    with component.store.reader() as con:
        computed = [
            r[0]
            for r in con.execute("SELECT rows_out FROM stage_runs WHERE stage = 'embed' ORDER BY started_at").fetchall()
        ]
        total = con.execute("SELECT count(*) FROM embeddings").fetchall()[0][0]
    assert computed[0] == 41 and 0 < computed[1] <= 6 and total == sum(computed)


def test_embedding_selection_must_point_at_an_embedding_stage(tmp_path, tiny_sentence_model):
    write_samples(tmp_path / "pool.jsonl", 5)
    path = pipeline(tmp_path, tiny_sentence_model)
    document = yaml.safe_load(path.read_text())
    document["attributes"]["stages"].append({"name": "lengths", "kind": "text_stats"})
    document["attributes"]["selections"][0]["embedding"] = "lengths"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(Exception, match="not an embedding stage"):
        load_pipeline_file(path)
