"""`curation export NAME --format hub`: a Hub dataset folder with a card (issue #21, item 4).

A real pipeline runs once: an alpaca source (one set of fields), a `format: auto` source mixing
alpaca, ShareGPT and messages records, and an `hf_dataset` source reading a local Hub-layout
folder with `config` and `data_files`. The exported folders are read back by `datasets`.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from curation_assets.cli import main
from tests.support.files import alpaca_records, write_jsonl

PIPELINE = """\
type: curation_assets.CurationPipeline
attributes:
  name: hubby
  duckdb_path: hubby.duckdb
  automation: {condition: none, observe_sources_cron: null}
  sources:
    - name: alpaca
      path: data/alpaca.jsonl
      format: alpaca
    - name: mixed
      path: data/mixed.jsonl
    - name: local_hub
      hf_dataset: hub_src
      config: fr
      data_files: fr/*.parquet
      format: alpaca
  stages:
    - name: lengths
      kind: text_stats
  selections:
    - name: longest
      kind: top_score
      stage: lengths
      column: output_words
      budget: 12
  exports:
    - {selection: longest, format: hub, path: exports/longest}
"""
PLAIN = """\
type: curation_assets.CurationPipeline
attributes:
  name: plain
  duckdb_path: plain.duckdb
  automation: {condition: none, observe_sources_cron: null}
  sources:
    - name: alpaca
      path: data/alpaca.jsonl
      format: alpaca
  stages:
    - name: lengths
      kind: text_stats
  selections:
    - name: alpaca_only
      kind: top_score
      stage: lengths
      column: output_words
      budget: 6
"""
HUB_CARD = """---
configs:
- config_name: fr
  data_files:
  - split: train
    path: fr/*.parquet
---
"""


def mixed_records() -> list[dict]:
    """A `format: auto` file: three record shapes, each normalising to a conversation."""
    records: list[dict] = []
    for i in range(4):
        records.append({"instruction": f"Alpaca task {i}", "input": "", "output": "long " * (40 + i)})
        records.append(
            {
                "conversations": [
                    {"from": "human", "value": f"ShareGPT question {i}"},
                    {"from": "gpt", "value": "reply " * (50 + i)},
                ],
                "id": f"sg{i}",
            }
        )
        records.append(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"Messages question {i}"},
                    {"role": "assistant", "content": "answer " * (45 + i)},
                ]
            }
        )
    return records


def invoke(*args: object, env: dict | None = None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def _offline(monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> dict:
    import pyarrow as pa

    folder = tmp_path_factory.mktemp("hub_export") / "pipe"
    write_jsonl(folder / "data" / "alpaca.jsonl", alpaca_records(20))
    write_jsonl(folder / "data" / "mixed.jsonl", mixed_records())
    (folder / "hub_src" / "fr").mkdir(parents=True)
    (folder / "hub_src" / "README.md").write_text(HUB_CARD, encoding="utf-8")
    pq.write_table(
        pa.table(
            {
                "instruction": [f"Question fr {i}" for i in range(5)],
                "input": [""] * 5,
                "output": ["mot " * (30 + i) for i in range(5)],
            }
        ),
        folder / "hub_src" / "fr" / "a.parquet",
    )
    yaml_file = folder / "defs.yaml"
    yaml_file.write_text(PIPELINE, encoding="utf-8")
    plain_yaml = folder / "plain" / "defs.yaml"
    write_jsonl(plain_yaml.parent / "data" / "alpaca.jsonl", alpaca_records(20))
    plain_yaml.write_text(PLAIN, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)
        mp.setenv("HF_HUB_OFFLINE", "1")
        for pipeline in (yaml_file, plain_yaml):
            result = CliRunner().invoke(main, ["run", str(pipeline)], catch_exceptions=False)
            assert result.exit_code == 0, result.output
    return {
        "yaml": yaml_file,
        "folder": folder,
        "db": folder / "hubby.duckdb",
        "plain_db": plain_yaml.parent / "plain.duckdb",
    }


def members(pipe: dict, selection: str, db: str = "db") -> list[tuple]:
    with duckdb.connect(str(pipe[db]), read_only=True) as con:
        return con.execute(
            "SELECT s.sample_id, s.messages, s.raw_record, m.rank FROM selections m "
            "JOIN samples s USING (sample_id) WHERE m.selection = $s ORDER BY m.rank",
            {"s": selection},
        ).fetchall()


def test_mixed_formats_export_as_one_schema_that_datasets_reads(pipe: dict, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "longest-hub"
    result = invoke("export", "longest", "--format", "hub", "--db", pipe["db"], "--out", out)
    assert result.exit_code == 0, result.output
    expected = members(pipe, "longest")
    formats = {json.loads(raw).keys().__contains__("conversations") for _, _, raw, _ in expected}
    assert formats == {True, False}, "the selection must mix record shapes for this test to mean anything"
    shards = sorted((out / "data").iterdir())
    assert [p.name for p in shards] == ["train-00000-of-00001.parquet"]
    assert pq.read_schema(shards[0]).names == ["messages", "sample_id", "source", "rank", "score", "original_record"]
    loaded = datasets.load_dataset(str(out), split="train")
    assert len(loaded) == len(expected) == 12
    assert loaded["sample_id"] == [row[0] for row in expected]
    assert loaded["messages"] == [row[1] for row in expected]
    assert [json.loads(raw) for raw in loaded["original_record"]] == [json.loads(row[2]) for row in expected]
    assert all(set(turn) == {"role", "content"} for conversation in loaded["messages"] for turn in conversation)
    assert (tmp_path / ".longest-hub.curation-export.json").is_file()


def test_one_record_shape_keeps_the_original_fields_as_columns(pipe: dict, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "alpaca-hub"
    assert invoke("export", "alpaca_only", "--format", "hub", "--db", pipe["plain_db"], "--out", out).exit_code == 0
    loaded = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    expected = members(pipe, "alpaca_only", "plain_db")
    assert len(loaded) == len(expected) == 6
    originals = [json.loads(row[2]) for row in expected]
    assert loaded.column_names == [
        "messages",
        "sample_id",
        "source",
        "rank",
        "score",
        "instruction",
        "input",
        "output",
        "id",
        "meta",
    ]
    assert loaded["id"] == [r["id"] for r in originals] and loaded["output"] == [r["output"] for r in originals]
    assert [m["lang"] for m in loaded["meta"]] == [r["meta"]["lang"] for r in originals]
    assert [m["weight"] for m in loaded["meta"]] == [float(r["meta"]["weight"]) for r in originals]
    # a list mixing text and numbers has no one type: its items are kept as JSON text
    assert [[json.loads(t) for t in m["tags"]] for m in loaded["meta"]] == [r["meta"]["tags"] for r in originals]


def test_card_lists_every_stage_with_its_config_hash_and_the_report(pipe: dict, tmp_path: Path) -> None:
    out = tmp_path / "card"
    assert invoke("export", "longest", "--format", "hub", "--db", pipe["db"], "--out", out).exit_code == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    head, body = card.split("---\n", 2)[1:]
    meta = yaml.safe_load(head)
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert [(s["name"], s["num_examples"]) for s in meta["dataset_info"]["splits"]] == [("train", 12)]
    assert meta["dataset_info"]["download_size"] == sum(p.stat().st_size for p in (out / "data").iterdir())
    assert [f["name"] for f in meta["dataset_info"]["features"]][:2] == ["messages", "sample_id"]
    with duckdb.connect(str(pipe["db"]), read_only=True) as con:
        runs = con.execute(
            "SELECT stage, kind, config_hash, config::VARCHAR FROM stage_runs "
            "QUALIFY row_number() OVER (PARTITION BY stage ORDER BY finished_at DESC) = 1"
        ).fetchall()
    assert {r[0] for r in runs} == {"alpaca", "mixed", "local_hub", "lengths", "longest"}
    for stage, kind, config_hash, _ in runs:
        assert f"### `{stage}` ({kind})" in body and f"config hash `{config_hash}`" in body
    assert "`hub_src`, config `fr`, split `train`" in body  # the hf_dataset source with its config
    local_hub = next(json.loads(r[3]) for r in runs if r[0] == "local_hub")
    assert local_hub["data_files"] == "fr/*.parquet" and "data_files: fr/*.parquet" in body
    assert "### Selection `longest`" in body and "| size | 12 |" in body
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images and all(f"](images/{name})" in body for name in images) and "data:image" not in body
    assert str(pipe["folder"]) not in card  # local directories stay private


def test_push_without_a_token_fails_before_anything_is_written_or_sent(pipe: dict, tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import HfApi

    calls: list[str] = []
    monkeypatch.setattr(HfApi, "upload_folder", lambda *a, **k: calls.append("upload_folder"))
    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: calls.append("create_repo"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = tmp_path / "pushed"
    result = invoke("export", "longest", "--format", "hub", "--db", pipe["db"], "--out", out, "--push", "me/longest")
    assert result.exit_code != 0
    assert "HF_TOKEN" in result.output and "nothing was written or sent" in result.output
    assert calls == [] and not out.exists()
    other = invoke("export", "longest", "--format", "jsonl", "--db", pipe["db"], "--out", out, "--push", "me/x")
    assert other.exit_code != 0 and "--push needs --format hub" in other.output


def test_push_offline_with_a_token_is_refused_and_the_token_never_echoed(
    pipe: dict, tmp_path: Path, monkeypatch
) -> None:
    secret = "hf_" + "Zx9" * 10
    monkeypatch.setenv("HF_TOKEN", secret)
    result = invoke(
        "export", "longest", "--format", "hub", "--db", pipe["db"], "--out", tmp_path / "p", "--push", "me/longest"
    )
    assert result.exit_code != 0 and "HF_HUB_OFFLINE" in result.output and secret not in result.output


def test_every_sample_in_several_shards_reads_back_in_order(pipe: dict, tmp_path: Path, monkeypatch) -> None:
    import datasets

    from curation_assets import hub_export

    monkeypatch.setattr(hub_export, "BATCH_ROWS", 5)
    monkeypatch.setattr(hub_export, "SHARD_BYTES", 1)  # every batch starts a new shard
    out = tmp_path / "all"
    assert invoke("export", "samples", "--format", "hub", "--db", pipe["db"], "--out", out).exit_code == 0
    names = sorted(p.name for p in (out / "data").iterdir())
    assert len(names) > 1 and names == [f"train-{i:05d}-of-{len(names):05d}.parquet" for i in range(len(names))]
    with duckdb.connect(str(pipe["db"]), read_only=True) as con:
        expected = [
            r[0]
            for r in con.execute(
                "SELECT sample_id FROM samples WHERE active ORDER BY first_seen, source, sample_id"
            ).fetchall()
        ]
    loaded = datasets.load_dataset(str(out), split="train")
    assert loaded["sample_id"] == expected and loaded["rank"] == list(range(1, len(expected) + 1))
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "every active sample" in card and "## Selection report" not in card and not (out / "images").exists()


def test_a_yaml_export_writes_the_hub_folder_too(pipe: dict) -> None:
    import datasets

    out = pipe["folder"] / "exports" / "longest"
    assert (out / "README.md").is_file() and (pipe["folder"] / "exports" / ".longest.curation-export.json").is_file()
    assert datasets.load_dataset(str(out), split="train")["sample_id"] == [row[0] for row in members(pipe, "longest")]


def test_a_local_hf_dataset_folder_is_protected_from_exports(pipe: dict) -> None:
    source = pipe["folder"] / "hub_src"
    before = sorted(p.name for p in source.rglob("*"))
    result = invoke("export", "longest", "--format", "hub", "--pipeline", pipe["yaml"], "--out", source, "--force")
    assert result.exit_code != 0 and "source 'local_hub'" in result.output
    assert sorted(p.name for p in source.rglob("*")) == before
