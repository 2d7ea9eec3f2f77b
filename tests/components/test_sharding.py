"""Sharded stages: one Dagster step per shard under the multiprocess executor (2 processes,
4 shards), no DuckDB lock error, and the same rows and selections as the unsharded run."""

import json
import os
import re
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
import yaml
from dagster.components.resolved.errors import ResolutionException

from curation_assets.components.standalone import PipelineFileError, load_pipeline_file
from curation_assets.methods.sharding import shard_of
from curation_assets.stages.core.registry import pipeline_config_hashes
from tests.support.files import write_samples
from tests.support.pipelines import pipeline_document
from tests.support.runs import execute_multiprocess_job, materialize_document

ROOT = Path(__file__).resolve().parents[2]


def document(model: Path, shards: int | None) -> dict:
    sharded = {"shards": shards} if shards else {}
    return pipeline_document(
        "sharded",
        stages=[
            {"name": "embed", "kind": "embedding", "model": str(model), "batch_size": 8, **sharded},
            {"name": "lengths", "kind": "text_stats", **sharded},
        ],
        selections=[
            {"name": "kcenter", "kind": "kcenter_greedy", "embedding": "embed", "budget": 12},
            {"name": "longest", "kind": "top_score", "stage": "lengths", "column": "output_words", "budget": 5},
        ],
        source_format="alpaca",
    )


def tables(folder: Path) -> dict:
    with duckdb.connect(str(folder / "sharded.duckdb"), read_only=True) as con:
        return {
            "embed": dict(con.execute("SELECT sample_id, embedding FROM embeddings").fetchall()),
            "lengths": con.execute(
                "SELECT sample_id, output_words, instruction_words FROM text_stats ORDER BY sample_id"
            ).fetchall(),
            "selections": con.execute(
                "SELECT selection, sample_id, rank FROM selections ORDER BY selection, rank"
            ).fetchall(),
            "runs": con.execute(
                "SELECT stage, rows_in, rows_out, json_extract_string(stats, '$.shard') "
                "FROM stage_runs WHERE kind <> 'source' ORDER BY stage, started_at"
            ).fetchall(),
        }


@pytest.mark.e2e
def test_four_shards_on_two_processes_equal_the_unsharded_run(tmp_path, tiny_sentence_model):
    folders = {}
    for shards in (None, 4):
        folder = tmp_path / f"shards_{shards}"
        folder.mkdir()
        write_samples(folder / "pool.jsonl", 40)
        folders[shards] = folder
    materialize_document(folders[None], document(tiny_sentence_model, None))  # in process, unsharded
    (folders[4] / "defs.yaml").write_text(yaml.safe_dump(document(tiny_sentence_model, 4)))
    # Each of the 15 steps runs in its own process, 2 at a time, forked from a forkserver that has
    # imported Dagster, the project, torch and sentence-transformers once (spawned, each step imports
    # them again: twice this test's time on 2 cores). The processes and their DuckDB writes are as real.
    preload = ("dagster", "curation_assets.components.standalone", "torch", "sentence_transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = execute_multiprocess_job(folders[4], 2, env, timeout_s=600, preload=preload)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "lock" not in log.lower() or "Could not set lock" not in log
    assert "multiprocess executor" in log and "sharded__embed__shard_3_of_4" in log
    # every step in a process of its own (pids differ from the parent's and between the shards)
    pids = {int(p) for p in re.findall(r" - (\d+) - sharded__\w+\.sharded__\w+__shard_\d_of_4 - STEP_START", log)}
    parent = re.search(r"multiprocess executor: parent process \(pid: (\d+)\)", log)
    assert parent is not None and len(pids) == 8 and int(parent.group(1)) not in pids, log[-3000:]

    plain, sharded = tables(folders[None]), tables(folders[4])
    assert plain["lengths"] == sharded["lengths"] and plain["selections"] == sharded["selections"]
    assert plain["embed"].keys() == sharded["embed"].keys()
    for sid, vector in plain["embed"].items():
        np.testing.assert_allclose(sharded["embed"][sid], vector, rtol=1e-5, atol=1e-6)

    n = len(plain["embed"])
    for stage in ("embed", "lengths"):
        runs = [r for r in sharded["runs"] if r[0] == stage]
        assert sorted(r[3] for r in runs) == ["0/4", "1/4", "2/4", "3/4"]
        expected = sorted(sum(shard_of(sid, 4) == i for sid in plain["embed"]) for i in range(4))
        assert sorted(r[1] for r in runs) == expected and sum(r[2] for r in runs) == n


def test_shards_do_not_change_the_config_hash_and_only_per_sample_stages_shard(tmp_path):
    (tmp_path / "pool.jsonl").write_text('{"instruction": "a", "input": "", "output": "b"}\n')
    hashes = []
    for shards in (None, 4):
        (tmp_path / "defs.yaml").write_text(yaml.safe_dump(document(Path("model"), shards)))
        spec = load_pipeline_file(tmp_path / "defs.yaml").spec
        hashes.append(pipeline_config_hashes([*spec.stages, *spec.selections]))
    assert hashes[0] == hashes[1]

    bad = document(Path("model"), None)
    bad["attributes"]["selections"][0]["shards"] = 2
    bad["attributes"]["stages"].append({"name": "warm", "kind": "lora_warmup", "shards": 2})
    (tmp_path / "defs.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises((PipelineFileError, ResolutionException)) as info:
        load_pipeline_file(tmp_path / "defs.yaml")
    message = str(info.value)
    assert "stages.2.shards" in message and "lora_warmup cannot be sharded" in message
    assert "selections.0.shards" in message and "kcenter_greedy cannot be sharded" in message
    assert "embedding" in message and "text_stats" in message  # the shardable kinds are listed


def test_shard_of_matches_duckdb():
    ids = [f"{i:032x}" for i in range(0, 10**6, 7919)]
    with duckdb.connect() as con:
        got = [
            r[0]
            for r in con.execute(
                "SELECT ('0x' || substr(md5(s), 1, 8))::UBIGINT % 5 FROM unnest($ids) AS t(s)", {"ids": ids}
            ).fetchall()
        ]
    assert got == [shard_of(s, 5) for s in ids]
    assert len(set(got)) == 5


def test_gpu_op_tags_go_to_model_stages_only(tmp_path, tiny_sentence_model):
    from curation_assets.components.standalone import pipeline_definitions

    write_samples(tmp_path / "pool.jsonl", 5)
    doc = document(tiny_sentence_model, None)
    tags = yaml.safe_load((ROOT / "curation_assets" / "deploy" / "gpu_op_tags.yaml").read_text())["gpu_op_tags"]
    doc["attributes"]["gpu_op_tags"] = tags
    doc["attributes"]["stages"].append(
        {"name": "embed_sharded", "kind": "embedding", "model": str(tiny_sentence_model), "shards": 2}
    )
    (tmp_path / "defs.yaml").write_text(yaml.safe_dump(doc))
    definitions = pipeline_definitions(load_pipeline_file(tmp_path / "defs.yaml"))
    by_name = {a.key.path[-1]: a for a in definitions.assets if isinstance(a, dg.AssetsDefinition)}
    expected = tags["dagster-k8s/config"]  # dagster stores dict tags as JSON, which dagster-k8s reads
    assert json.loads(by_name["embed"].node_def.tags["dagster-k8s/config"]) == expected
    assert "dagster-k8s/config" not in by_name["lengths"].node_def.tags
    shard_ops = [node for node in by_name["embed_sharded"].node_def.node_defs if "__shard_" in node.name]
    assert len(shard_ops) == 2 and all(json.loads(op.tags["dagster-k8s/config"]) == expected for op in shard_ops)


def test_a_new_shard_count_computes_nothing_new(tmp_path, tiny_sentence_model):
    write_samples(tmp_path / "pool.jsonl", 12)
    materialize_document(tmp_path, document(tiny_sentence_model, 3))
    write_samples(tmp_path / "pool.jsonl", 2, start=100)  # 2 new samples (its near duplicate exists already)
    materialize_document(tmp_path, document(tiny_sentence_model, 2))
    runs = [r for r in tables(tmp_path)["runs"] if r[0] == "embed"]
    assert [r[3] for r in runs[:3]] == ["0/3", "1/3", "2/3"] and sum(r[1] for r in runs[:3]) == 13
    assert [r[3] for r in runs[3:]] == ["0/2", "1/2"]
    assert sum(r[1] for r in runs[3:]) == 2  # only the new samples, over the 2 new shards


def test_deployment_files_parse():
    deploy = ROOT / "curation_assets" / "deploy"
    instance = yaml.safe_load((deploy / "dagster.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    assert yaml.safe_load((deploy / "executor.yaml").read_text())["execution"]["config"]["max_concurrent"] > 1
