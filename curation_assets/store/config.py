"""The pipeline YAML's `store:` block and `open_store`, which turns it into a `Store` (issue #22).

`{kind: duckdb, path: ...}` is one DuckDB file (the default; `duckdb_path:` is its shorthand);
`{kind: ducklake, catalog: ..., data_path: ..., work_path: ...}` is a DuckLake: the catalog in
PostgreSQL, the data as Parquet files under a shared folder or object-storage URL. Secrets come
only from environment variables: the block names the variable (`password_env`), never the password.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from curation_assets.specs import SpecModel
from curation_assets.store.base import Store

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PASSWORD = re.compile(r"(?i)(^|[\s:;'\"])password\s*=")
_URL_CREDENTIALS = re.compile(r"://[^/@\s]*:[^/@\s]*@")
INSTALL_HINT = (
    "the ducklake store kind needs the DuckLake environment (DuckDB 1.5.5 with the ducklake and "
    "postgres extension wheels): run `make setup-ducklake`, or install into the venv running the "
    'pipeline with `pip install -c constraints-ducklake.txt -e .` (docs/deployment.md, "Shared store")'
)


class StoreUnavailableError(RuntimeError):
    """The `store:` block names a kind this environment cannot open (missing packages)."""


class DuckDBStoreConfig(SpecModel):
    """`store: {kind: duckdb, path: ...}`: one DuckDB file (the same as `duckdb_path:`)."""

    kind: Literal["duckdb"] = Field(description="`duckdb`: one DuckDB file, written by one process at a time.")
    path: str = Field(description="DuckDB file; relative to the YAML file.")


class DuckLakeStoreConfig(SpecModel):
    """`store: {kind: ducklake, ...}`: a DuckLake many workers write at once (each shard in its own
    transaction). Needs the DuckLake environment (`make setup-ducklake`)."""

    kind: Literal["ducklake"] = Field(description="`ducklake`: catalog in PostgreSQL, data as Parquet files.")
    catalog: str = Field(
        min_length=1,
        description=(
            "DuckLake catalog without the `ducklake:` prefix, e.g. `postgres:dbname=lake host=db port=5432 "
            "user=curation`. No password here: name its environment variable in `password_env`."
        ),
    )
    password_env: str | None = Field(
        default=None,
        description=(
            "Name of the environment variable holding the catalog database's password (given to PostgreSQL "
            "as PGPASSWORD); unset when the server needs none (e.g. a .pgpass file)."
        ),
    )
    data_path: str = Field(
        min_length=1,
        description=(
            "Folder or object-storage URL (`s3://bucket/lake/`) of the Parquet data files; every worker must "
            "reach it. A local path is relative to the YAML file. For `s3://` the credentials come only from "
            "the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, and AWS_ENDPOINT_URL / AWS_REGION "
            "where needed."
        ),
    )
    work_path: str = Field(
        min_length=1,
        description=(
            "Folder every worker shares for staging, stage/ingest locks and artefacts (checkpoints, trained "
            "scorers); relative to the YAML file."
        ),
    )
    lock_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a writer retries a commit that conflicts with another worker's before failing.",
    )

    @field_validator("catalog")
    @classmethod
    def _no_password_in_catalog(cls, value: str) -> str:
        if _PASSWORD.search(value) or _URL_CREDENTIALS.search(value):
            # the value itself is never repeated: it holds a password
            raise ValueError(
                "the catalog string holds a password; remove it and name an environment variable holding it "
                "in `password_env` (treat the password as leaked if this file was shared)"
            )
        if value.startswith("ducklake:"):
            raise ValueError("give the catalog without the `ducklake:` prefix, e.g. `postgres:dbname=lake host=...`")
        return value

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.match(value):
            raise ValueError(
                "password_env must be the name of an environment variable (letters, digits and underscores, "
                "e.g. CURATION_LAKE_PASSWORD), not the password itself"
            )
        return value


StoreConfig = Annotated[DuckDBStoreConfig | DuckLakeStoreConfig, Field(discriminator="kind")]
"""A parsed `store:` block of either kind."""


def _local(value: str, base_dir: Path | None) -> str:
    """`value` made absolute against `base_dir` unless it is a URL (`s3://...`) or already absolute."""
    if "://" in value or base_dir is None:
        return value
    path = Path(value).expanduser()
    text = str(path if path.is_absolute() else base_dir / path)
    return text + "/" if value.endswith("/") and not text.endswith("/") else text


def resolve_store_paths(config: DuckDBStoreConfig | DuckLakeStoreConfig, base_dir: Path) -> Any:
    """The block with its local paths made absolute against `base_dir` (the YAML file's folder)."""
    if isinstance(config, DuckDBStoreConfig):
        return config.model_copy(update={"path": _local(config.path, base_dir)})
    return config.model_copy(
        update={"data_path": _local(config.data_path, base_dir), "work_path": _local(config.work_path, base_dir)}
    )


def describe_store_config(config: DuckDBStoreConfig | DuckLakeStoreConfig) -> str:
    """`Store.describe()` of the store a block names, without opening it: the DuckDB file, or
    `ducklake:<catalog> data <data_path>` (the catalog never holds a password: see the validator)."""
    if isinstance(config, DuckDBStoreConfig):
        return config.path
    return f"ducklake:{config.catalog} data {config.data_path}"


def ducklake_local_folders(config: DuckLakeStoreConfig) -> list[tuple[Path, str]]:
    """(folder, what it is) for the block's local folders: what an export must never replace."""
    folders = [(Path(config.work_path), "the DuckLake store's work folder")]
    if "://" not in config.data_path:
        folders.append((Path(config.data_path), "the DuckLake store's data folder"))
    return folders


DUCKLAKE_DUCKDB = "1.5.5"
DUCKLAKE_PACKAGES = ("duckdb_extension_ducklake", "duckdb_extension_postgres")


def ducklake_missing() -> str:
    """What this environment lacks for the ducklake kind ("" when nothing): the extension wheels are
    built for exactly one DuckDB version, so a different DuckDB cannot load them."""
    import importlib.util

    import duckdb

    problems = [f"the Python package {name}" for name in DUCKLAKE_PACKAGES if importlib.util.find_spec(name) is None]
    if duckdb.__version__ != DUCKLAKE_DUCKDB:
        problems.append(f"duckdb=={DUCKLAKE_DUCKDB} (this environment has {duckdb.__version__})")
    return ", ".join(problems)


def open_store(config: DuckDBStoreConfig | DuckLakeStoreConfig | dict[str, Any]) -> Store:
    """The store a parsed `store:` block names (a dict is validated first). Paths are taken as given:
    resolve relative ones first (`resolve_store_paths`)."""
    if isinstance(config, dict):
        from pydantic import TypeAdapter

        config = TypeAdapter(StoreConfig).validate_python(config)
    if isinstance(config, DuckDBStoreConfig):
        from curation_assets.store.duckdb_store import DuckDBStore

        return DuckDBStore(config.path)
    missing = ducklake_missing()
    if missing:
        raise StoreUnavailableError(f"{INSTALL_HINT}; missing here: {missing}")
    try:  # by name: the module needs the DuckLake environment
        DuckLakeStore = importlib.import_module("curation_assets.store.ducklake_store").DuckLakeStore
    except ImportError as err:  # the module, duckdb 1.5.5 or an extension wheel is missing
        raise StoreUnavailableError(f"{INSTALL_HINT} ({type(err).__name__}: {err})") from err
    return DuckLakeStore(
        catalog=config.catalog,
        data_path=config.data_path,
        work_path=config.work_path,
        password_env=config.password_env,
        lock_timeout_s=config.lock_timeout_s,
    )
