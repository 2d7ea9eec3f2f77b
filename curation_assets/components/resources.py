"""Dagster resources shared by pipelines: `CurationStore` (where the tables live) and `LLMEndpoint`
(an OpenAI-compatible chat server).

Define them once in a `resources.py` defs module (in the pipeline's folder or any folder above it
inside the defs folder; the nearest definition of a key wins) and name them in a pipeline YAML:
`store: {resource: curation_store}` instead of `duckdb_path`, `llm: {resource: judge_llm}` for
every LLM stage, or `llm: {resource: NAME, ...}` on one stage, whose other keys override the
resource's (as `duckdb_path` overrides `store:`). They are resolved when the pipeline loads, because config hashes (the model) and the
export guards (the DuckDB path) are derived from them then; every asset that uses one declares it
in `required_resource_keys`, so Dagster shows and checks the binding, and stops at run time
(`check_bound_resources`) when the resource bound under a key is not the one the pipeline loaded with.

The API key is only ever an `EnvVar`: its variable's name becomes the stage's `api_key_env`, so
neither the run config nor `stage_runs` ever holds the key itself.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator, Mapping
from hashlib import sha1
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import BeforeValidator, Discriminator, Field, Tag, ValidationError

from curation_assets.llm.endpoint import DEFAULT_LOCAL_BASE_URL, LLMEndpointSpec
from curation_assets.redact import redact_text
from curation_assets.specs import SpecModel
from curation_assets.store.config import DuckDBStoreConfig, DuckLakeStoreConfig, resolve_store_paths

RESOURCES_FILE = "resources.py"
YamlPath = list[str | int]


class CurationStore(dg.ConfigurableResource):
    """Where a pipeline keeps its tables: one DuckDB file per pipeline (stage views are per file), or a
    DuckLake (catalog in PostgreSQL, Parquet data files) that many workers write at once. In every
    string field `{pipeline}` is replaced by the pipeline's name."""

    kind: Literal["duckdb", "ducklake"] = Field(
        default="duckdb",
        description="`duckdb`: one DuckDB file (`path`); `ducklake`: `catalog`, `data_path`, `work_path`.",
    )
    path: str = Field(
        default=".curation/{pipeline}.duckdb",
        description=(
            "DuckDB file (kind duckdb); `{pipeline}` is replaced by the pipeline's name so pipelines sharing this "
            "resource keep separate files. Relative to the project root (the folder holding pyproject.toml)."
        ),
    )
    catalog: str | None = Field(
        default=None,
        description=(
            "DuckLake catalog (kind ducklake), e.g. `postgres:dbname=lake_{pipeline} host=db user=curation`; "
            "pipelines sharing this resource need separate catalogs (their stage views share names). Never a "
            "password: name its variable in `password_env`."
        ),
    )
    password_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the catalog database's password (kind ducklake).",
    )
    data_path: str | None = Field(
        default=None,
        description=(
            "Folder or object-storage URL of the DuckLake's Parquet files (kind ducklake); a local path is "
            "relative to the project root."
        ),
    )
    work_path: str | None = Field(
        default=None,
        description=(
            "Folder every worker shares for staging, locks and artefacts (kind ducklake); relative to the project root."
        ),
    )

    def duckdb_path(self, pipeline: str, project_root: Path) -> str:
        path = Path(_value(self.path, "path").replace("{pipeline}", pipeline)).expanduser()
        return str(path if path.is_absolute() else project_root / path)

    def store_config(self, pipeline: str, project_root: Path) -> DuckDBStoreConfig | DuckLakeStoreConfig:
        """The `store:` block this resource stands for; ValueError (never echoing a value) when it is
        incomplete or holds a password."""
        kind = _value(self.kind, "kind")
        if kind == "duckdb":
            return DuckDBStoreConfig(kind="duckdb", path=self.duckdb_path(pipeline, project_root))
        fields = {
            name: _value(value, name).replace("{pipeline}", pipeline)
            for name in ("catalog", "password_env", "data_path", "work_path")
            if (value := getattr(self, name)) is not None
        }
        missing = [name for name in ("catalog", "data_path", "work_path") if name not in fields]
        if missing:
            raise ValueError(f"kind ducklake needs {', '.join(missing)}")
        try:
            config = DuckLakeStoreConfig.model_validate({"kind": "ducklake", **fields})
        except ValidationError as err:  # the messages only: an input may be the password
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())) from None
        return resolve_store_paths(config, project_root)


class LLMEndpoint(dg.ConfigurableResource):
    """An OpenAI-compatible chat server shared by LLM stages (OpenAI, vLLM, llama.cpp, ...)."""

    base_url: str = Field(default=DEFAULT_LOCAL_BASE_URL, description="Base URL of the API (ends in /v1).")
    model: str = Field(default="smollm2-135m-instruct", description="Model name sent with each request.")
    api_key: str | None = Field(
        default=None,
        description=(
            "`dg.EnvVar('OPENAI_API_KEY')`; unset for local servers. A literal key is refused: it would be "
            "stored with the definitions."
        ),
    )

    def endpoint_fields(self) -> dict[str, Any]:
        """The `llm:` keys this resource supplies (the key as the name of its environment variable)."""
        if self.api_key is not None and not isinstance(self.api_key, dg.EnvVar):
            raise ValueError(
                "api_key must be dg.EnvVar('NAME_OF_VARIABLE'), not the key itself: keys are "
                "read from the environment at run time and never stored; treat the key as leaked"
            )
        return {
            "base_url": _value(self.base_url, "base_url"),
            "model": _value(self.model, "model"),
            "api_key_env": self.api_key.env_var_name if isinstance(self.api_key, dg.EnvVar) else None,
        }


class ResourceRef(SpecModel):
    """`{resource: NAME}`: a resource defined in a `resources.py` defs module."""

    resource: str = Field(description="Resource key, e.g. curation_store or judge_llm.")


def _store_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return "resource" if "resource" in value else value.get("kind")
    return "resource" if isinstance(value, ResourceRef) else getattr(value, "kind", None)


def _known_store_tag(value: Any) -> Any:
    """A block of no known kind fails with one message (a ValueError: Dagster re-creates the error
    with its YAML line, which a custom pydantic error type would not survive)."""
    tag = _store_tag(value)
    if tag not in ("resource", "duckdb", "ducklake"):
        got = "no `kind`" if tag is None else f"kind {tag!r}"
        raise ValueError(
            f"`store:` is {{resource: NAME}}, {{kind: duckdb, path: FILE}} or {{kind: ducklake, catalog: ..., "
            f"data_path: ..., work_path: ...}} (got {got})"
        )
    return value


StoreBlock = Annotated[
    Annotated[ResourceRef, Tag("resource")]
    | Annotated[DuckDBStoreConfig, Tag("duckdb")]
    | Annotated[DuckLakeStoreConfig, Tag("ducklake")],
    Discriminator(_store_tag),
    BeforeValidator(_known_store_tag),
]
"""The pipeline YAML's `store:` block."""


def _value(value: str, field: str) -> str:
    """A field's value at load time: an `EnvVar` is read from the environment now."""
    if isinstance(value, dg.EnvVar):
        resolved = os.environ.get(value.env_var_name)
        if not resolved:
            raise ValueError(f"{field}: environment variable {value.env_var_name} is not set")
        return resolved
    return value


# ---- finding the resources ----------------------------------------------------------------------


def resource_files(yaml_dir: Path, top: Path) -> list[Path]:
    """`resources.py` files from `top` down to `yaml_dir` (nearest last, so it wins)."""
    yaml_dir, top = yaml_dir.resolve(), top.resolve()
    folders = [yaml_dir, *yaml_dir.parents]
    if top in folders:
        folders = folders[: folders.index(top) + 1]
    else:
        folders = [yaml_dir]
    return [f / RESOURCES_FILE for f in reversed(folders) if (f / RESOURCES_FILE).is_file()]


def _definitions_in(module: Any) -> Iterator[dg.Definitions]:
    from dagster.components.definitions import LazyDefinitions

    for value in vars(module).values():
        if isinstance(value, dg.Definitions):
            yield value
        elif isinstance(value, LazyDefinitions) and not value.has_context_arg:
            yield value()


def resources_from_files(files: list[Path]) -> dict[str, Any]:
    """Resources of `resources.py` files imported by path (`curation run` outside a dg project)."""
    found: dict[str, Any] = {}
    for file in files:
        name = f"_curation_resources_{sha1(str(file).encode()).hexdigest()[:12]}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, file)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        for defs in _definitions_in(module):
            found.update(defs.resources or {})
    return found


def resources_from_context(context: dg.ComponentLoadContext, yaml_dir: Path) -> dict[str, Any]:
    """Resources of the `resources.py` defs modules above a pipeline, built by dg (`dg check defs`,
    `dg dev`), which also records that the pipeline depends on them."""
    found: dict[str, Any] = {}
    for file in resource_files(yaml_dir, context.defs_module_path):
        found.update(context.build_defs(file).resources or {})
    return found


# ---- applying them to a pipeline ----------------------------------------------------------------


def apply_resources(
    spec: Any, resources: Mapping[str, Any], project_root: Path
) -> tuple[Any, list[tuple[YamlPath, str]]]:
    """The pipeline with `store:` turned into `duckdb_path` (a DuckDB file) or a `DuckLakeStoreConfig`
    and every LLM stage's endpoint merged with its resource, plus problems as (YAML path under
    attributes, message)."""
    problems: list[tuple[YamlPath, str]] = []
    update: dict[str, Any] = {}
    resource_key: str | None = None
    if spec.duckdb_path is not None:
        update["store"] = None  # the pipeline's own file overrides the store block
    elif isinstance(spec.store, DuckDBStoreConfig):
        update["duckdb_path"], update["store"] = spec.store.path, None  # relative to the YAML file, as duckdb_path
    elif isinstance(spec.store, ResourceRef):
        store = _lookup(resources, spec.store.resource, CurationStore, ["store", "resource"], problems)
        if store is not None:
            try:
                config = store.store_config(spec.name, project_root)
            except ValueError as err:
                problems.append((["store", "resource"], f"resource {spec.store.resource!r}: {err}"))
            else:
                if isinstance(config, DuckDBStoreConfig):
                    update["duckdb_path"] = config.path
                else:
                    update["store"], resource_key = config, spec.store.resource
    elif spec.store is None:
        problems.append(
            (
                ["duckdb_path"],
                "set `duckdb_path` (a DuckDB file) or `store: {resource: NAME}` (a CurationStore resource), "
                "`store: {kind: duckdb, path: ...}` or `store: {kind: ducklake, ...}`",
            )
        )
    for section in ("stages", "selections"):
        stages = []
        for i, stage in enumerate(getattr(spec, section)):
            endpoint = getattr(stage, "llm", None)
            if isinstance(endpoint, LLMEndpointSpec):
                merged = _merged_endpoint(spec, stage, endpoint, resources, [section, i, "llm"], problems)
                stage = stage.model_copy(update={"llm": merged}) if merged is not None else stage
            stages.append(stage)
        update[section] = stages
    resolved = spec.model_copy(update=update)
    if resource_key is not None:  # the DuckLake block came from this resource: assets still require it
        resolved._store_resource = resource_key
    return resolved, problems


def _merged_endpoint(
    spec: Any,
    stage: Any,
    endpoint: LLMEndpointSpec,
    resources: Mapping[str, Any],
    path: YamlPath,
    problems: list[tuple[YamlPath, str]],
) -> LLMEndpointSpec | None:
    """The stage's endpoint: its resource's keys, then the keys the stage's `llm:` block sets."""
    stage_sets_llm = "llm" in stage.model_fields_set
    where: YamlPath
    if endpoint.resource is not None:
        name = endpoint.resource
        where = [*path, "resource"]
    elif spec.llm is not None:
        name = spec.llm.resource
        where = ["llm", "resource"]
    else:
        return None
    resource = _lookup(resources, name, LLMEndpoint, where, problems)
    if resource is None:
        return None
    try:
        fields = resource.endpoint_fields()
    except ValueError as err:
        problems.append((where, f"resource {name!r}: {err}"))
        return None
    overrides = endpoint.model_dump(include=endpoint.model_fields_set - {"resource"}) if stage_sets_llm else {}
    if "base_url" in overrides and "api_key_env" not in overrides:
        fields["api_key_env"] = None  # the resource's key goes to the resource's server only
    try:
        return LLMEndpointSpec.model_validate({**fields, **overrides, "resource": name})
    except ValidationError as err:
        problems.append((where, f"resource {name!r}: {'; '.join(e['msg'] for e in err.errors())}"))
        return None


def _lookup(
    resources: Mapping[str, Any], name: str, expected: type, where: YamlPath, problems: list[tuple[YamlPath, str]]
) -> Any:
    resource = resources.get(name)
    if resource is None:
        known = ", ".join(sorted(k for k, v in resources.items() if isinstance(v, expected))) or "none"
        problems.append(
            (
                where,
                f"no {expected.__name__} resource named {name!r} in a {RESOURCES_FILE} defs module "
                f"beside or above this pipeline (known: {known})",
            )
        )
        return None
    if not isinstance(resource, expected):
        problems.append((where, f"resource {name!r} is a {type(resource).__name__}, not a {expected.__name__}"))
        return None
    return resource


def pipeline_resource_keys(spec: Any, stage: Any = None) -> set[str]:
    """Resource keys an asset of the pipeline uses: the store's, and `stage`'s endpoint's."""
    store = getattr(spec, "store", None)
    keys = {store.resource} if isinstance(store, ResourceRef) else set()
    if getattr(spec, "_store_resource", None):
        keys.add(spec._store_resource)
    endpoint = getattr(stage, "llm", None)
    if isinstance(endpoint, LLMEndpointSpec) and endpoint.resource:
        keys.add(endpoint.resource)
    return keys


# ---- the resources bound at run time ------------------------------------------------------------


class ResourceMismatch(RuntimeError):
    """A run bound a resource other than the one the pipeline was loaded with."""


def resource_summary(resource: Any, pipeline: str, project_root: Path) -> dict[str, Any]:
    """What a pipeline takes from `resource` when it loads (its config hashes and export guards derive
    from it): a store's resolved location, an endpoint's base URL and model. The API key is left out:
    it changes no result, and once Dagster resolves its EnvVar the variable's name is gone."""
    try:
        if isinstance(resource, CurationStore):
            return resource.store_config(pipeline, project_root).model_dump(mode="json")
        if isinstance(resource, LLMEndpoint):
            return {"base_url": _value(resource.base_url, "base_url"), "model": _value(resource.model, "model")}
    except ValueError as err:
        return {"error": str(err)}
    return {"type": type(resource).__name__}


def check_bound_resources(
    bound: Mapping[str, Any], loaded: Mapping[str, Mapping[str, Any]], pipeline: str, project_root: Path, asset: str
) -> None:
    """Raise ResourceMismatch when a resource bound to a run is not the one the pipeline was loaded
    with (`loaded`: key -> `resource_summary` at load time): rows would go under config hashes, or to
    a store, that do not describe them. Values are shown with URL credentials masked."""
    problems = []
    for key in sorted(set(bound) & set(loaded)):
        now, then = resource_summary(bound[key], pipeline, project_root), dict(loaded[key])
        fields = sorted(f for f in {*now, *then} if now.get(f) != then.get(f))
        if fields:
            shown = ", ".join(f"{f} {_shown(then.get(f))} -> {_shown(now.get(f))}" for f in fields)
            problems.append(f"{key!r} ({shown})")
    if problems:
        raise ResourceMismatch(
            f"{asset}: the resources bound to this run are not those pipeline {pipeline!r} was loaded with: "
            f"{'; '.join(problems)}. Its config hashes and store were derived from the loaded ones, so nothing was "
            "written: bind the definitions' own resources (dg.materialize(..., resources=defs.resources)), or change "
            f"{RESOURCES_FILE} and reload the definitions"
        )


def _shown(value: Any) -> str:
    return "unset" if value is None else repr(redact_text(str(value)))
