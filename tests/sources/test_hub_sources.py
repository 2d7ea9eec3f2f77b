"""`hf_dataset` sources with config, revision, data_files and streaming, offline (issue #21, item 4).

The datasets are real local folders of Parquet files with a Hub dataset card (`configs:` in its
YAML front matter), read by `datasets.load_dataset` exactly as a Hub repository would be; the
Hub revision is resolved from a real Hugging Face cache layout (`datasets--owner--name/refs/main`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation_assets.sources.hub import hub_data_version, resolve_revision
from curation_assets.sources.ingest import stage_source
from curation_assets.sources.records import SourceReadError
from curation_assets.sources.spec import SourceSpec
from curation_assets.stages.core.runner import source_config_hash
from tests.support.pipelines import pipeline_document

CARD = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/train-*.parquet
  - split: test
    path: en/test-*.parquet
- config_name: fr
  data_files:
  - split: train
    path: fr/*.parquet
---
# two languages
"""


def alpaca_table(prefix: str, n: int) -> pa.Table:
    return pa.table(
        {
            "instruction": [f"{prefix} question {i}?" for i in range(n)],
            "input": [""] * n,
            "output": [f"{prefix} answer {i}." for i in range(n)],
        }
    )


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))


@pytest.fixture
def hub_folder(tmp_path: Path) -> Path:
    """A dataset laid out like a Hub repository: two configs, `en` with two splits."""
    root = tmp_path / "pipe" / "langs"
    for sub in ("en", "fr"):
        (root / sub).mkdir(parents=True)
    pq.write_table(alpaca_table("en", 6), root / "en" / "train-00000-of-00002.parquet")
    pq.write_table(alpaca_table("en-b", 4), root / "en" / "train-00001-of-00002.parquet")
    pq.write_table(alpaca_table("en-test", 3), root / "en" / "test-00000-of-00001.parquet")
    pq.write_table(alpaca_table("fr", 5), root / "fr" / "part-0.parquet")
    (root / "README.md").write_text(CARD, encoding="utf-8")
    return root


def instructions(spec: SourceSpec, base_dir: Path, staging: Path) -> list[str]:
    staging.mkdir(exist_ok=True)
    result = stage_source(spec, base_dir, staging)
    return pq.read_table(result.samples_file).column("instruction").to_pylist()


def test_config_and_split_choose_the_files(hub_folder: Path, tmp_path: Path) -> None:
    base = hub_folder.parent
    fr = SourceSpec(name="fr", hf_dataset="langs", config="fr", format="alpaca")
    assert sorted(instructions(fr, base, tmp_path / "s1")) == sorted(f"fr question {i}?" for i in range(5))
    en_test = SourceSpec(name="en", hf_dataset="langs", config="en", split="test", format="alpaca")
    assert sorted(instructions(en_test, base, tmp_path / "s2")) == sorted(f"en-test question {i}?" for i in range(3))
    en_train = SourceSpec(name="en", hf_dataset=str(hub_folder), config="en", format="alpaca")
    assert len(instructions(en_train, base, tmp_path / "s3")) == 10


def test_data_files_reads_only_the_named_files(hub_folder: Path, tmp_path: Path) -> None:
    spec = SourceSpec(name="en", hf_dataset="langs", data_files="en/train-00001-*.parquet", format="alpaca")
    assert sorted(instructions(spec, hub_folder.parent, tmp_path / "s")) == sorted(
        f"en-b question {i}?" for i in range(4)
    )
    by_split = SourceSpec(
        name="en",
        hf_dataset="langs",
        split="extra",
        format="alpaca",
        data_files={"extra": ["fr/part-0.parquet", "en/test-00000-of-00001.parquet"]},
    )
    assert len(instructions(by_split, hub_folder.parent, tmp_path / "s2")) == 8


def test_streaming_with_limit_reads_the_first_rows(hub_folder: Path, tmp_path: Path) -> None:
    spec = SourceSpec(name="fr", hf_dataset="langs", config="fr", streaming=True, limit=3, format="alpaca")
    staging = tmp_path / "s"
    staging.mkdir()
    result = stage_source(spec, hub_folder.parent, staging)
    assert result.records_read == 3 and result.samples == 3
    assert not (tmp_path / "datasets-cache").exists() or not any((tmp_path / "datasets-cache").rglob("*.arrow"))


def test_ingest_records_the_local_folder_fingerprint(hub_folder: Path, tmp_path: Path) -> None:
    spec = SourceSpec(name="fr", hf_dataset="langs", config="fr", format="alpaca")
    staging = tmp_path / "s"
    staging.mkdir()
    result = stage_source(spec, hub_folder.parent, staging)
    assert hub_data_version(spec, hub_folder.parent) == f"local:{result.fingerprint}"
    assert result.stats()["source_fingerprint"] == result.fingerprint


def test_data_version_of_a_local_folder_follows_its_content(hub_folder: Path) -> None:
    spec = SourceSpec(name="fr", hf_dataset="langs", config="fr", format="alpaca")
    base = hub_folder.parent
    first = hub_data_version(spec, base)
    assert first.startswith("local:") and hub_data_version(spec, base) == first
    pq.write_table(alpaca_table("fr", 6), hub_folder / "fr" / "part-0.parquet")  # one more row
    changed = hub_data_version(spec, base)
    assert changed != first
    pq.write_table(alpaca_table("fr", 2), hub_folder / "fr" / "part-1.parquet")  # a new file
    assert hub_data_version(spec, base) not in (first, changed)


def write_cache_ref(cache: Path, name: str, revision: str, sha: str) -> None:
    """The Hugging Face cache's record of which commit `revision` pointed at when last downloaded."""
    refs = cache / f"datasets--{name.replace('/', '--')}" / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / revision).write_text(sha, encoding="utf-8")


def test_offline_data_version_is_the_cached_commit_and_moves_with_it(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    spec = SourceSpec(name="a", hf_dataset="someone/alpaca-like", format="alpaca")
    write_cache_ref(cache, "someone/alpaca-like", "main", "a" * 40)
    assert hub_data_version(spec, tmp_path) == f"hub:someone/alpaca-like@{'a' * 40}"
    write_cache_ref(cache, "someone/alpaca-like", "main", "b" * 40)  # a newer commit was downloaded
    assert hub_data_version(spec, tmp_path) == f"hub:someone/alpaca-like@{'b' * 40}"
    tagged = SourceSpec(name="a", hf_dataset="someone/alpaca-like", revision="v1.0", format="alpaca")
    write_cache_ref(cache, "someone/alpaca-like", "v1.0", "c" * 40)
    assert hub_data_version(tagged, tmp_path).endswith("c" * 40)
    pinned = "0123456789abcdef0123456789abcdef01234567"
    assert resolve_revision("someone/never-downloaded", pinned) == pinned  # a commit needs no lookup


def test_offline_unknown_revision_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    spec = SourceSpec(name="a", hf_dataset="someone/missing", revision="v2", format="alpaca")
    with pytest.raises(
        SourceReadError, match=r"HF_HUB_OFFLINE is set .* no revision 'v2' of dataset 'someone/missing'"
    ):
        hub_data_version(spec, tmp_path)


def test_hub_options_need_hf_dataset_and_leave_old_hashes_alone(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="revision.*only apply to `hf_dataset`"):
        SourceSpec(name="a", path="x.jsonl", revision="main")
    plain = SourceSpec(name="a", hf_dataset="someone/data")
    assert set(json.loads(json.dumps(plain.model_dump(mode="json")))) >= {"hf_dataset", "split"}
    assert not {"config", "revision", "data_files", "streaming"} & set(plain.model_dump(mode="json"))
    hashes = {source_config_hash(plain)}
    for change in ({"config": "main"}, {"revision": "v1"}, {"data_files": "a/*.parquet"}, {"streaming": True}):
        hashes.add(source_config_hash(SourceSpec(name="a", hf_dataset="someone/data", **change)))
    assert len(hashes) == 5


def test_the_pipeline_observes_the_resolved_commit_and_the_folder_content(
    hub_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    """The observable source assets Dagster uses to make a pipeline stale report these data versions."""
    import dagster as dg
    import yaml
    from huggingface_hub import constants

    from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    write_cache_ref(cache, "someone/data", "main", "a" * 40)
    document = pipeline_document(
        "obs",
        stages=[{"name": "lengths", "kind": "text_stats"}],
        sources=[
            {"name": "langs", "hf_dataset": "langs", "config": "fr", "format": "alpaca"},
            {"name": "remote", "hf_dataset": "someone/data", "format": "alpaca"},
        ],
    )
    yaml_file = hub_folder.parent / "defs.yaml"
    yaml_file.write_text(yaml.safe_dump(document))
    defs = pipeline_definitions(load_pipeline_file(yaml_file))
    observe = defs.resolve_job_def("obs_observe_sources")
    keys = {name: dg.AssetKey(["obs", "raw", name]) for name in ("langs", "remote")}

    def versions(instance: dg.DagsterInstance) -> dict[str, str]:
        assert observe.execute_in_process(instance=instance).success
        found = {}
        for name, key in keys.items():
            record = instance.get_latest_data_version_record(key)
            assert record is not None and record.asset_observation is not None
            found[name] = record.asset_observation.data_version
        return found

    with dg.instance_for_test() as instance:
        first = versions(instance)
        assert first["remote"] == f"hub:someone/data@{'a' * 40}" and first["langs"].startswith("local:")
        assert versions(instance) == first
        write_cache_ref(cache, "someone/data", "main", "b" * 40)
        pq.write_table(alpaca_table("fr-new", 5), hub_folder / "fr" / "part-0.parquet")
        second = versions(instance)
        assert second["remote"] == f"hub:someone/data@{'b' * 40}" and second["langs"] not in (first["langs"],)
