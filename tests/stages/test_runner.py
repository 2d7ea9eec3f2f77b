"""A run that dies before its write commits leaves the store exactly as it was."""

import json

import pytest

from curation_assets.sources.spec import SourceSpec
from curation_assets.stages.core import runner
from curation_assets.stages.core.registry import get_kind
from curation_assets.stages.generic.text_stats import TextStatsSpec
from curation_assets.store import DuckDBStore


def write_alpaca(path, n):
    path.write_text(
        "\n".join(json.dumps({"instruction": f"q{i}", "input": "", "output": f"a {i}"}) for i in range(n)) + "\n"
    )


def counts(store):
    with store.reader() as con:
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
            for t in ("samples", "source_samples", "stage_runs", "text_stats")
        }


def test_ingest_failing_at_the_last_write_leaves_nothing(tmp_path, monkeypatch):
    write_alpaca(tmp_path / "a.jsonl", 5)
    store = DuckDBStore(tmp_path / "db.duckdb")
    store.ensure_schema(["schema/stages/text_stats.sql"])
    spec = SourceSpec(name="a", path="a.jsonl")

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(runner, "insert_stage_run", crash)
    with pytest.raises(RuntimeError, match="killed"):
        runner.run_ingest(spec, pipeline="p", base_dir=tmp_path, store=store)
    assert counts(store) == {"samples": 0, "source_samples": 0, "stage_runs": 0, "text_stats": 0}


def test_stage_failing_at_the_last_write_keeps_previous_rows(tmp_path, monkeypatch):
    write_alpaca(tmp_path / "a.jsonl", 5)
    store = DuckDBStore(tmp_path / "db.duckdb")
    store.ensure_schema(["schema/stages/text_stats.sql"])
    runner.run_ingest(SourceSpec(name="a", path="a.jsonl"), pipeline="p", base_dir=tmp_path, store=store)
    kind, spec = get_kind("text_stats"), TextStatsSpec(name="lengths", kind="text_stats")
    hashes, tables = {"lengths": kind.config_hash(spec)}, {"lengths": "text_stats"}
    runner.run_stage(kind, spec, pipeline="p", store=store, stage_hashes=hashes, stage_tables=tables)
    before = counts(store)
    write_alpaca(tmp_path / "a.jsonl", 8)
    runner.run_ingest(SourceSpec(name="a", path="a.jsonl"), pipeline="p", base_dir=tmp_path, store=store)
    monkeypatch.setattr(runner, "insert_stage_run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        runner.run_stage(kind, spec, pipeline="p", store=store, stage_hashes=hashes, stage_tables=tables)
    assert counts(store)["text_stats"] == before["text_stats"] == 5


def test_stage_runs_record_the_device_a_model_kind_ran_on(tmp_path):
    from curation_assets.models.device import compute_device

    write_alpaca(tmp_path / "a.jsonl", 3)
    store = DuckDBStore(tmp_path / "db.duckdb")
    store.ensure_schema(["schema/stages/text_stats.sql"])
    runner.run_ingest(SourceSpec(name="a", path="a.jsonl"), pipeline="p", base_dir=tmp_path, store=store)
    kind, spec = get_kind("text_stats"), TextStatsSpec(name="lengths", kind="text_stats")
    hashes, tables = {"lengths": kind.config_hash(spec)}, {"lengths": "text_stats"}
    runner.run_stage(kind, spec, pipeline="p", store=store, stage_hashes=hashes, stage_tables=tables)
    with store.reader() as con:
        assert con.execute("SELECT device FROM stage_runs WHERE stage = 'lengths'").fetchall() == [("cpu",)]
    # model kinds record torch's device and dtype (an H200 run recorded "cpu" for every stage before)
    used = compute_device()
    for model_kind in ("embedding", "lm_loss", "grad_features", "lora_warmup", "jvp_embeddings"):
        assert runner.stage_device(get_kind(model_kind)) == f"{used.name}/{used.dtype_name}/{used.threads}t"
    for plain_kind in ("text_stats", "kcenter_greedy", "random", "alpagasus"):
        assert runner.stage_device(get_kind(plain_kind)) == "cpu"
