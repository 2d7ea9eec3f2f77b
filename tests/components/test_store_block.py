"""The pipeline YAML's `store:` block (issue #22): `{resource: NAME}`, `{kind: duckdb, path}` or
`{kind: ducklake, catalog, password_env, data_path, work_path}`; errors name the YAML file, line and
key and never repeat a password; without the DuckLake environment a ducklake store says how to
install it. (The DuckLake store itself is tested in its own environment.)"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from click.testing import CliRunner

from curation_assets.cli import main
from curation_assets.components.metadata import store_metadata
from curation_assets.components.resources import CurationStore
from curation_assets.components.spec import pipeline_protected_paths
from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.export import unsafe_target
from curation_assets.store import DuckDBStore, DuckLakeStoreConfig, Store, StoreUnavailableError, open_store

SECRET = "hunter2-lake-pw"
LAKE = {
    "kind": "ducklake",
    "catalog": "postgres:dbname=lake host=127.0.0.1 port=5432 user=curation",
    "password_env": "CURATION_LAKE_PASSWORD",
    "data_path": "lake/data/",
    "work_path": "lake/work",
}


def write(folder: Path, store: dict | None = None, *, duckdb_path: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pool.jsonl").write_text(
        "".join(json.dumps({"instruction": f"q {i}", "input": "", "output": f"a {i}"}) + "\n" for i in range(6))
    )
    attributes: dict = {"name": "lakey", "sources": [{"name": "pool", "path": "pool.jsonl", "format": "alpaca"}]}
    if duckdb_path is not None:
        attributes["duckdb_path"] = duckdb_path
    if store is not None:
        attributes["store"] = store
    attributes["stages"] = [{"name": "lengths", "kind": "text_stats"}]
    attributes["automation"] = {"condition": "none"}
    path = folder / "defs.yaml"
    path.write_text(yaml.safe_dump({"type": "curation_assets.CurationPipeline", "attributes": attributes}))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(Exception) as info:
        load_pipeline_file(path)
    assert type(info.value).__name__ in ("ValidationError", "ResolutionException"), info.value
    return str(info.value)


def test_duckdb_kind_is_the_same_as_duckdb_path(tmp_path: Path) -> None:
    by_block = load_pipeline_file(write(tmp_path / "a", {"kind": "duckdb", "path": "x.duckdb"}))
    by_path = load_pipeline_file(write(tmp_path / "b", duckdb_path="x.duckdb"))
    for folder, component in (("a", by_block), ("b", by_path)):
        store = component.store
        assert isinstance(store, DuckDBStore) and isinstance(store, Store)
        assert store.path == tmp_path / folder / "x.duckdb"
        # the on-disk locations of every existing store: artefacts, locks, staging beside the file
        assert store.work_dir == tmp_path / folder / "x.artifacts"
        assert store.describe() == str(tmp_path / folder / "x.duckdb")
        assert component.spec.duckdb_path == "x.duckdb" and component.spec.store is None
    # duckdb_path still overrides a store block
    both = load_pipeline_file(write(tmp_path / "c", dict(LAKE), duckdb_path="own.duckdb"))
    assert both.store.path == tmp_path / "c" / "own.duckdb"


def test_ducklake_block_loads_and_needs_the_ducklake_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CURATION_LAKE_PASSWORD", SECRET)
    component = load_pipeline_file(write(tmp_path, dict(LAKE)))
    config = component.store_config
    assert isinstance(config, DuckLakeStoreConfig)
    assert (config.catalog, config.password_env) == (LAKE["catalog"], "CURATION_LAKE_PASSWORD")
    assert config.data_path == f"{tmp_path}/lake/data/" and config.work_path == str(tmp_path / "lake" / "work")
    assert pipeline_definitions(component).resolve_all_asset_keys()  # the assets build without the packages
    # the lake's local folders are protected from exports like the DuckDB file is
    protected = pipeline_protected_paths(component.spec, component.base_dir)
    assert "work folder" in (unsafe_target(tmp_path / "lake" / "work", protected) or "")
    assert "data folder" in (unsafe_target(tmp_path / "lake" / "data" / "x.parquet", protected) or "")
    if duckdb.__version__ != "1.5.5":  # the normal environment: a clear install message
        with pytest.raises(StoreUnavailableError, match=r"make setup-ducklake.*constraints-ducklake\.txt"):
            _ = component.store
        run = CliRunner().invoke(main, ["run", str(tmp_path / "defs.yaml")])
        assert run.exit_code != 0 and "make setup-ducklake" in run.output and "Traceback" not in run.output
        assert SECRET not in run.output
    check = CliRunner().invoke(main, ["check", str(tmp_path / "defs.yaml")])
    assert check.exit_code == 0, check.output
    assert f"ducklake:{LAKE['catalog']} data {tmp_path}/lake/data/" in check.output and SECRET not in check.output


def test_open_store_without_the_packages_names_what_is_missing() -> None:
    if duckdb.__version__ == "1.5.5":
        pytest.skip("the DuckLake environment: its own tests open a real lake")
    with pytest.raises(StoreUnavailableError) as info:
        open_store({**LAKE, "data_path": "/tmp/lake/data/", "work_path": "/tmp/lake/work"})
    message = str(info.value)
    for fragment in (
        "make setup-ducklake",
        "constraints-ducklake.txt",
        f"duckdb==1.5.5 (this environment has {duckdb.__version__})",
        "duckdb_extension_ducklake",
    ):
        assert fragment in message, message


BAD_BLOCKS = {
    "unknown_kind": ({"kind": "sqlite", "path": "x.db"}, ["store", "{resource: NAME}", "{kind: ducklake"]),
    "no_kind": ({"path": "x.duckdb"}, ["store", "{kind: duckdb, path: FILE}"]),
    "ducklake_without_catalog": (
        {k: v for k, v in LAKE.items() if k != "catalog"},
        ["store.ducklake.catalog", "Field required"],
    ),
    "ducklake_without_data_path": (
        {k: v for k, v in LAKE.items() if k != "data_path"},
        ["store.ducklake.data_path", "Field required"],
    ),
    "password_in_catalog": (
        {**LAKE, "catalog": f"postgres:dbname=lake user=c password={SECRET}"},
        ["store.ducklake.catalog", "holds a password", "password_env"],
    ),
    "password_in_catalog_url": (
        {**LAKE, "catalog": f"postgres:postgresql://c:{SECRET}@db/lake"},
        ["store.ducklake.catalog", "holds a password"],
    ),
    "password_as_password_env": (
        {**LAKE, "password_env": SECRET},
        ["store.ducklake.password_env", "name of an environment variable"],
    ),
    "unknown_key": ({**LAKE, "pasword": "x"}, ["store.ducklake.pasword"]),
}


@pytest.mark.parametrize("case", sorted(BAD_BLOCKS))
def test_bad_store_blocks_name_the_file_line_and_key(tmp_path: Path, case: str) -> None:
    block, fragments = BAD_BLOCKS[case]
    path = write(tmp_path, block)
    message = load_error(path)
    assert str(path) in message, message
    store_line = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip() == "store:")
    assert re.search(rf"defs\.yaml:{store_line}\b", message) or re.search(
        rf"defs\.yaml:{store_line + 1}\d*\b", message
    ), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert SECRET not in message


RESOURCES = textwrap.dedent("""\
    import dagster as dg

    from curation_assets.components import CurationStore


    @dg.definitions
    def resources() -> dg.Definitions:
        return dg.Definitions(resources={{"lake_store": CurationStore({fields})}})
    """)


def project(tmp_path: Path, fields: str) -> Path:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\n')
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "resources.py").write_text(RESOURCES.format(fields=fields))
    return write(tmp_path / "pipelines" / "lakey", {"resource": "lake_store"})


def test_curation_store_resource_of_kind_ducklake(tmp_path: Path) -> None:
    path = project(
        tmp_path,
        'kind="ducklake", catalog="postgres:dbname=lake_{pipeline} host=db user=c", '
        'password_env="CURATION_LAKE_PASSWORD", data_path="s3://bucket/{pipeline}/", work_path="/shared/{pipeline}"',
    )
    component = load_pipeline_file(path)
    config = component.store_config
    assert isinstance(config, DuckLakeStoreConfig)
    assert config.catalog == "postgres:dbname=lake_lakey host=db user=c"
    assert (config.data_path, config.work_path) == ("s3://bucket/lakey/", "/shared/lakey")
    assert component.resource_keys() == {"lake_store"}  # the assets still require the resource


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ('kind="ducklake", data_path="d/", work_path="w"', "kind ducklake needs catalog"),
        (
            f'kind="ducklake", catalog="postgres:dbname=x password={SECRET}", data_path="d/", work_path="w"',
            "holds a password",
        ),
    ],
)
def test_curation_store_resource_errors(tmp_path: Path, fields: str, fragment: str) -> None:
    message = load_error(project(tmp_path, fields))
    assert "resource 'lake_store'" in message and fragment in message and SECRET not in message


def test_resource_of_kind_duckdb_keeps_its_path(tmp_path: Path) -> None:
    component = load_pipeline_file(project(tmp_path, 'path=".curation/{pipeline}.duckdb"'))
    assert component.store.path == tmp_path / ".curation" / "lakey.duckdb"
    assert CurationStore().kind == "duckdb"


def test_metadata_keeps_duckdb_path_and_adds_store(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "m.duckdb")
    metadata = store_metadata(store)
    assert metadata["duckdb_path"] == dg.MetadataValue.path(str(tmp_path / "m.duckdb"))
    assert metadata["store"] == dg.MetadataValue.text(str(tmp_path / "m.duckdb"))


def test_a_store_block_travels_as_a_dict(tmp_path: Path) -> None:
    """A worker (celery, k8s) gets the parsed block as plain data and opens the same store."""
    component = load_pipeline_file(write(tmp_path, {"kind": "duckdb", "path": "w.duckdb"}))
    travelled = json.loads(json.dumps(component.store_config.model_dump()))
    store = open_store(travelled)
    assert isinstance(store, DuckDBStore) and store.path == tmp_path / "w.duckdb"
    assert store.protected_paths() == [
        tmp_path / "w.duckdb",
        tmp_path / "w.duckdb.wal",
        tmp_path / "w.duckdb.tmp",
        tmp_path / "w.artifacts",
    ]
    with pytest.raises(Exception, match="sqlite"):
        open_store({"kind": "sqlite", "path": "x"})
