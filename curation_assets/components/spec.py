"""The pipeline YAML schema, built from the stage-kind registry, and its cross-field checks."""

from __future__ import annotations

import contextlib
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args

from pydantic import Field, PrivateAttr, ValidationError, WrapValidator, create_model, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from curation_assets.components.resources import ResourceRef, StoreBlock
from curation_assets.evaluation.spec import EvaluationSpec
from curation_assets.export import ProtectedPath, store_protected_paths, unsafe_target
from curation_assets.llm.endpoint import LLMEndpointSpec
from curation_assets.redact import looks_like_secret, redact_text
from curation_assets.sources.hub import local_dataset_dir
from curation_assets.sources.packaged import packaged_file
from curation_assets.sources.spec import SourceSpec
from curation_assets.specs import SpecModel
from curation_assets.stages.core.registry import (
    NAME_PATTERN,
    RESERVED_NAMES,
    StageKind,
    StageSpec,
    all_kinds,
    get_kind,
    kinds_for,
)
from curation_assets.store.config import (
    DuckDBStoreConfig,
    DuckLakeStoreConfig,
    ducklake_local_folders,
    resolve_store_paths,
)

ExportFormat = Literal["jsonl", "parquet", "hf", "hub"]


class ExportSpec(SpecModel):
    """Write a selection (or all active samples) to a file whenever it changes."""

    selection: str = Field(description="Selection name, or `samples` for every active sample.")
    format: ExportFormat = Field(
        "jsonl",
        description=(
            "jsonl: original records as read; parquet/hf: normalised columns plus the original record; hub: a "
            "Hugging Face Hub dataset folder (Parquet shards of one schema and a dataset card)."
        ),
    )
    path: str = Field(description="Output file (jsonl/parquet) or folder (hf/hub); relative to the YAML file.")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="Asset name; default export_<selection>.")
    overwrite: bool = Field(
        False,
        description=(
            "Replace whatever is at `path` even when it is not an earlier export of this pipeline (which is "
            "recognised by the manifest `.<name>.curation-export.json` beside it)."
        ),
    )

    @property
    def asset_name(self) -> str:
        return self.name or f"export_{self.selection}"


class AutomationSpec(SpecModel):
    """When Dagster re-curates by itself (declarative automation; no click needed on a fresh instance)."""

    condition: Literal["eager", "on_cron", "none"] = Field(
        default="eager",
        description=(
            "eager: an asset runs as soon as what it reads changed; on_cron: at most once per `cron` tick after "
            "its inputs changed; none: only when launched."
        ),
    )
    cron: str = Field(default="0 * * * *", description="Cron for `on_cron`.")
    sensor_interval_seconds: int = Field(
        default=30,
        ge=5,
        description=(
            "How often the automation sensor evaluates the conditions (Dagster's default; its daemon checks "
            "sensors every 5 s, so shorter intervals act no sooner)."
        ),
    )
    observe_sources_cron: str | None = Field(
        default="*/15 * * * *",
        description=(
            "How often source files are fingerprinted (a changed file makes everything downstream stale); "
            "null to observe only by hand."
        ),
    )
    schedule: str | None = Field(default=None, description="Cron of a schedule that re-runs the whole pipeline.")
    llm_stages: Literal["manual", "eager", "on_cron"] = Field(
        default="manual",
        description=(
            "LLM-judged stages (requests that cost money on a hosted API) and everything that reads them: manual = "
            "only when launched, so a growing source never starts paid requests by itself; eager / on_cron opt "
            "them in (as for `condition`). The `llm.max_requests_per_run` limit applies either way."
        ),
    )


class PipelineSpecBase(SpecModel):
    @model_validator(mode="wrap")
    @classmethod
    def _hide_secret_inputs(cls, data: Any, handler: Any) -> Any:
        """Errors never repeat a value that may be secret (an API key pasted into `api_key_env`, a URL
        with credentials, anything under `llm`). The inputs are replaced in the error itself: Dagster
        re-creates errors with their inputs shown to add YAML lines, ignoring `hide_input_in_errors`."""
        try:
            return handler(data)
        except ValidationError as err:
            raise _without_secret_inputs(err) from None

    _store_resource: str | None = PrivateAttr(default=None)  # the resource a resolved `store:` block came from

    name: str = Field(pattern=NAME_PATTERN, description="Pipeline name: the Dagster group and asset key prefix.")
    duckdb_path: str | None = Field(
        default=None, description="DuckDB file holding every table; relative to the YAML file. Overrides `store:`."
    )
    store: StoreBlock | None = Field(
        default=None,
        description=(
            "Where the tables live: `{resource: NAME}` (a `CurationStore` Dagster resource), `{kind: duckdb, path: "
            "...}` (one DuckDB file, as `duckdb_path`) or `{kind: ducklake, catalog: ..., data_path: ..., "
            "work_path: ...}` (a DuckLake many workers write at once; docs/deployment.md)."
        ),
    )
    llm: ResourceRef | None = Field(
        default=None,
        description="`{resource: NAME}`: the `LLMEndpoint` Dagster resource of every LLM stage; "
        "a stage's `llm:` keys override it.",
    )
    description: str | None = None
    sources: list[SourceSpec] = Field(min_length=1, description="Raw datasets ingested into `samples`.")
    exports: list[ExportSpec] = Field(default_factory=list, description="Files written from selections.")
    automation: AutomationSpec = Field(default_factory=AutomationSpec, description="Re-curation on data change.")
    gpu_op_tags: dict[str, Any] | None = Field(
        None,
        description=(
            "Op tags given to the steps of model-running stages (kinds tagged `torch`), e.g. a `dagster-k8s/config` "
            "that requests a GPU and a GPU node selector; other steps stay on CPU nodes."
        ),
    )
    evaluation: EvaluationSpec | None = Field(
        None,
        description=(
            "Fine-tune the causal LM on selections and compare held-out losses with a random band (`make eval`)."
        ),
    )
    if TYPE_CHECKING:  # fields of the model `pipeline_spec_model()` builds, one union member per registered kind
        stages: list[StageSpec]
        selections: list[StageSpec]


HIDDEN_INPUT = "[hidden]"
_SECRET_KEY = re.compile(r"key|token|secret|passw|auth|credential|^llm$|^store$", re.IGNORECASE)


def _holds_secret(value: Any) -> bool:
    if isinstance(value, str):
        return looks_like_secret(value) or redact_text(value) != value
    if isinstance(value, dict):
        return any(_holds_secret(k) or _holds_secret(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_holds_secret(v) for v in value)
    return False


def _without_secret_inputs(err: ValidationError) -> ValidationError:
    """`err` with HIDDEN_INPUT for every input that is, holds or sits under something secret-looking
    (types, locations, messages and harmless inputs kept)."""
    lines: list[Any] = []
    for line in err.errors():
        kind: Any = line["type"]
        ctx = line.get("ctx")
        secret = _holds_secret(line["input"]) or any(isinstance(p, str) and _SECRET_KEY.search(p) for p in line["loc"])
        probe: InitErrorDetails = {"type": kind, "loc": (), "input": None}
        if ctx:
            probe["ctx"] = ctx
        try:
            ValidationError.from_exception_data("probe", [probe])
        except (KeyError, TypeError, ValueError):  # a custom error type: keep its message as it was
            message = line["msg"].replace("{", "{{").replace("}", "}}")  # a str from pydantic, not user code
            kind, ctx = PydanticCustomError(kind, message), None  # pyright: ignore[reportArgumentType]
        lines.append(
            {
                "type": kind,
                "loc": line["loc"],
                "input": HIDDEN_INPUT if secret else line["input"],
                **({"ctx": ctx} if ctx else {}),
            }
        )
    return ValidationError.from_exception_data(err.title, lines)


def _discriminated(specs: list[type[StageSpec]]) -> Any:
    """Union of kind specs, validated by picking the spec for `kind` directly.

    A plain discriminated union puts the tag into error locations
    (`selections.1.top_score.budget`), which Dagster cannot map back to a YAML line;
    validating the chosen spec directly keeps locations equal to YAML paths.
    """
    if len(specs) == 1:
        return specs[0]
    by_kind = {get_args(spec.model_fields["kind"].annotation)[0]: spec for spec in specs}
    kind_only = create_model("StageKindName", kind=(Literal[tuple(by_kind)], ...))  # type: ignore[valid-type]

    def validate_by_kind(value: Any, handler: Any) -> Any:
        if isinstance(value, dict):
            kind_only.model_validate({"kind": value["kind"]} if "kind" in value else {})
            return by_kind[value["kind"]].model_validate(value)
        return handler(value)

    return Annotated[Union[tuple(specs)], Field(discriminator="kind"), WrapValidator(validate_by_kind)]  # noqa: UP007


@cache
def pipeline_spec_model() -> type[PipelineSpecBase]:
    """The pydantic model of a pipeline YAML's `attributes`, one union member per registered kind."""
    stage_union: Any = _discriminated([k.spec for k in kinds_for("stage")])
    selection_union: Any = _discriminated([k.spec for k in kinds_for("selection")])
    # the unions exist only at run time, so the field types are values here, not type expressions
    fields: dict[str, Any] = {
        "stages": (list[stage_union], Field(default_factory=list, description="Scoring stages.")),
        "selections": (
            list[selection_union],
            Field(default_factory=list, description="Selections over stage outputs."),
        ),
    }
    return create_model("PipelineSpec", __base__=PipelineSpecBase, **fields)


YamlPath = list[str | int]


def check_pipeline(spec: Any, base_dir: Path) -> list[tuple[YamlPath, str]]:
    """Cross-field problems (names, references, files) as (YAML path under attributes, message)."""
    problems: list[tuple[YamlPath, str]] = []
    seen: dict[str, YamlPath] = {}
    named: list[tuple[YamlPath, str]] = (
        [(["sources", i, "name"], s.name) for i, s in enumerate(spec.sources)]
        + [(["stages", i, "name"], s.name) for i, s in enumerate(spec.stages)]
        + [(["selections", i, "name"], s.name) for i, s in enumerate(spec.selections)]
        + [(["exports", i, "name"], e.asset_name) for i, e in enumerate(spec.exports)]
    )
    kind_tables = {k.table for k in all_kinds().values() if k.table}
    for path, name in named:
        if name in RESERVED_NAMES or name in kind_tables or name == "sample_scores":
            problems.append((path, f"{name!r} is a reserved table name; choose another name"))
        elif name in seen:
            where = ".".join(map(str, seen[name]))
            problems.append((path, f"name {name!r} is already used at {where}; names must be unique"))
        else:
            seen[name] = path

    stage_kinds: dict[str, StageKind] = {s.name: get_kind(s.kind) for s in spec.stages}
    selection_names = {s.name for s in spec.selections}
    for section in ("stages", "selections"):
        for i, stage in enumerate(getattr(spec, section)):
            for key, ref in stage.references().items():
                if ref == stage.name:
                    problems.append(([section, i, key], f"{stage.name!r} cannot read itself"))
                elif ref not in stage_kinds and ref not in selection_names:
                    known = ", ".join(sorted([*stage_kinds, *selection_names])) or "none"
                    problems.append(([section, i, key], f"no stage or selection named {ref!r} (known: {known})"))
            for key, message in stage.check_references(stage_kinds, selection_names):
                problems.append(([section, i, key], message))
            for key, message in stage.check_files(base_dir):
                problems.append(([section, i, key], message))
            endpoint = getattr(stage, "llm", None)  # LLM-judged stages: no API key over plain http
            if isinstance(endpoint, LLMEndpointSpec) and (problem := endpoint.insecure_key_problem()):
                problems.append(([section, i, "llm", "base_url"], f"stage {stage.name!r}: {problem}"))
            if stage.shards is not None and not (section == "stages" and get_kind(stage.kind).shardable):
                shardable = ", ".join(sorted(k.kind for k in all_kinds().values() if k.shardable))
                problems.append(
                    ([section, i, "shards"], f"{stage.kind} cannot be sharded (shardable kinds: {shardable})")
                )
            if section == "stages" and get_kind(stage.kind).generates_samples:
                for key in stage.references():
                    problems.append(
                        (
                            [section, i, key],
                            f"{stage.kind} adds samples that every other stage reads, "
                            f"so it cannot read another stage or selection itself",
                        )
                    )

    for i, source in enumerate(spec.sources):
        if source.path:
            path = Path(source.path).expanduser()
            path = path if path.is_absolute() else base_dir / path
            if not path.exists():
                problems.append((["sources", i, "path"], f"source file not found: {path}"))
        if source.package:
            try:
                location = packaged_file(source.package)
            except FileNotFoundError as err:
                problems.append((["sources", i, "package"], str(err)))
            else:
                if not location.exists():
                    problems.append((["sources", i, "package"], f"packaged file missing: {location}"))

    protected = pipeline_protected_paths(spec, base_dir)
    targets: dict[Path, int] = {}
    for i, export in enumerate(spec.exports):
        if export.selection != "samples" and export.selection not in selection_names:
            known = ", ".join(sorted(selection_names)) or "none"
            problems.append(
                (["exports", i, "selection"], f"no selection named {export.selection!r} (known: samples, {known})")
            )
        target = _in_base_dir(export.path, base_dir)
        unsafe = unsafe_target(target, protected)
        if unsafe:
            problems.append((["exports", i, "path"], unsafe))
        elif target.resolve() in targets:
            problems.append(
                (
                    ["exports", i, "path"],
                    f"exports.{targets[target.resolve()]} already writes {target}; each export needs its own path",
                )
            )
        targets.setdefault(target.resolve(), i)
    if spec.evaluation is not None:
        inputs = {s.name: s.input_selection for s in spec.selections}
        for key, message in spec.evaluation.check(selection_names, set(stage_kinds), base_dir, inputs):
            problems.append((["evaluation", key], message))
    return problems


def _in_base_dir(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def pipeline_store_config(spec: Any, base_dir: Path) -> DuckDBStoreConfig | DuckLakeStoreConfig:
    """The pipeline's store block with its local paths absolute (after `apply_resources`, which turns
    `store:` into `duckdb_path` for a DuckDB file)."""
    if spec.duckdb_path is not None:
        return DuckDBStoreConfig(kind="duckdb", path=str(_in_base_dir(spec.duckdb_path, base_dir)))
    if isinstance(spec.store, DuckLakeStoreConfig):
        return resolve_store_paths(spec.store, base_dir)
    raise ValueError(f"pipeline {spec.name!r} has no store: set duckdb_path or store")


def pipeline_protected_paths(spec: Any, base_dir: Path) -> list[ProtectedPath]:
    """What no export of the pipeline may replace: the store (DuckDB file, WAL, artefact folder; a
    DuckLake's local data and work folders), every
    local source, the pipeline folder itself (exports may go inside it) and the YAML files in it."""
    config = pipeline_store_config(spec, base_dir)
    if isinstance(config, DuckDBStoreConfig):
        protected = store_protected_paths(Path(config.path))
    else:
        protected = [ProtectedPath(path, what) for path, what in ducklake_local_folders(config)]
    for source in spec.sources:
        if source.path:
            protected.append(ProtectedPath(_in_base_dir(source.path, base_dir), f"source {source.name!r}"))
        elif source.package:
            with contextlib.suppress(FileNotFoundError):
                protected.append(ProtectedPath(packaged_file(source.package), f"source {source.name!r}"))
        elif (local := local_dataset_dir(source, base_dir)) is not None:  # an hf_dataset that is a local folder
            protected.append(ProtectedPath(local, f"source {source.name!r}"))
    protected.append(ProtectedPath(base_dir, "the pipeline folder", inside_ok=True))
    yaml_files = sorted([*base_dir.glob("*.yaml"), *base_dir.glob("*.yml")])
    protected += [ProtectedPath(p, "a pipeline YAML file") for p in yaml_files]
    return protected


def with_base_dir(spec: Any, base_dir: Path) -> Any:
    """The pipeline with every stage's relative file paths (prompt files, ...) made absolute."""
    return spec.model_copy(
        update={
            "stages": [s.with_base_dir(base_dir) for s in spec.stages],
            "selections": [s.with_base_dir(base_dir) for s in spec.selections],
            "evaluation": spec.evaluation.with_base_dir(base_dir) if spec.evaluation is not None else None,
        }
    )
