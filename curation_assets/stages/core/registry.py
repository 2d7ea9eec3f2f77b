"""Stage kinds: a kind is a spec class (its YAML keys) plus a run function.

Adding a method means adding a module that calls `register_kind`; the component builds
its YAML schema (a discriminated union on `kind`) from this registry, so its core never
changes. Third-party packages can add kinds through the `curation_assets.stage_kinds`
entry-point group (each entry point is a module to import).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import Field

from curation_assets.specs import SpecModel

if TYPE_CHECKING:
    import pyarrow as pa

    from curation_assets.stages.core.context import StageContext, StageOutput

Role = Literal["stage", "selection"]
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
RESERVED_NAMES = frozenset(
    {"samples", "source_samples", "rejected_samples", "stage_runs", "selections", "selection_details"}
)


class StageSpec(SpecModel):
    """Keys every stage and selection has; each kind adds its own."""

    # keys that do not change results (batch sizes, ...): left out of the config hash, like name and description
    UNHASHED: ClassVar[frozenset[str]] = frozenset()
    # keys naming a stage this one reads -> the kinds it may be: each is an asset dependency (`references`),
    # checked by `check_references`; those also in UPSTREAM_KEYS are `upstream_stages`
    STAGE_KEYS: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    UPSTREAM_KEYS: ClassVar[tuple[str, ...]] = ()

    name: str = Field(pattern=NAME_PATTERN, description="Stage name; the asset is `<pipeline>/<name>`.")
    kind: str
    description: str | None = Field(None, description="Shown in the Dagster UI.")
    input_selection: str | None = Field(
        None,
        description=(
            "Work only on the members of this selection (e.g. score the near-duplicate-free set, "
            "or judge a cheap filter's survivors with an expensive model)."
        ),
    )
    shards: int | None = Field(
        None,
        ge=1,
        le=1024,
        description=(
            "Split the stage into this many Dagster steps, each computing the samples whose "
            "md5(sample_id) falls in its shard and writing its own rows; results do not depend on it."
        ),
    )

    def references(self) -> dict[str, str]:
        """YAML key -> name of another stage or selection this one reads (becomes an asset dep)."""
        refs = {"input_selection": self.input_selection} if self.input_selection else {}
        return {**refs, **{key: name for key in self.STAGE_KEYS if (name := getattr(self, key))}}

    def score_sources(self) -> list[tuple[str, str]]:
        """(upstream stage, column) pairs a selection's `score` is taken from (column lineage)."""
        return []

    def check_references(
        self, stage_kinds: Mapping[str, StageKind[Any]], selection_names: set[str]
    ) -> list[tuple[str, str]]:
        """Checks of what the references point at: (YAML key, message) pairs. Kinds extend it."""
        return [
            *selection_reference_problems("input_selection", self.input_selection, stage_kinds),
            *[
                problem
                for key, kinds in self.STAGE_KEYS.items()
                for problem in stage_reference_problems(key, getattr(self, key), kinds, stage_kinds, selection_names)
            ],
        ]

    def hashed_config(self) -> dict[str, Any]:
        """The settings that change results: everything but name, description and `UNHASHED`."""
        return self.model_dump(mode="json", exclude={"name", "description", *self.UNHASHED})

    def upstream_stages(self) -> list[str]:
        """Stages whose stored results this stage's rows are computed from (a LoRA warm-up's
        checkpoints, ...): their config hashes enter this stage's config hash."""
        return [name for key in self.UPSTREAM_KEYS if (name := getattr(self, key))]

    def pool(self) -> str | None:
        """Dagster pool of the asset; None = the DuckDB writer pool. LLM stages use one per endpoint."""
        return None

    def check_files(self, base_dir: Path) -> list[tuple[str, str]]:
        """Problems with files this spec names (YAML key, message); paths are relative to `base_dir`."""
        return []

    def with_base_dir(self, base_dir: Path) -> StageSpec:
        """This spec with relative file paths made absolute (called once the YAML is checked)."""
        return self


def stage_reference_problems(
    key: str,
    name: str | None,
    kinds: Sequence[str],
    stage_kinds: Mapping[str, StageKind[Any]],
    selection_names: set[str],
    what: str | None = None,
) -> list[tuple[str, str]]:
    """(key, message) when the stage `name` that YAML key `key` names is a selection or a stage of
    none of `kinds` (`what` names them in the message); names that exist nowhere are reported by the
    component, so they pass here."""
    kind = stage_kinds.get(name) if name else None
    if kind is None and name in selection_names:
        actual = "a selection"
    elif kind is not None and kind.kind not in kinds:
        actual = f"a {kind.kind} stage"
    else:
        return []
    what = what or " or ".join(kinds)
    article = "an" if what[0] in "aeiou" else "a"
    return [(key, f"{name!r} is not {article} {what} stage (it is {actual})")]


def selection_reference_problems(
    key: str, name: str | None, stage_kinds: Mapping[str, StageKind[Any]]
) -> list[tuple[str, str]]:
    """(key, message) when the selection `name` that YAML key `key` names is a stage."""
    return [(key, f"{name!r} is a stage, not a selection")] if name and name in stage_kinds else []


SpecT = TypeVar("SpecT", bound=StageSpec)


@dataclass(frozen=True)
class StageKind(Generic[SpecT]):
    """A registered stage or selection kind; generic over its spec, so `run` is checked against `spec`."""

    kind: str
    role: Role
    spec: type[SpecT]
    run: Callable[[SpecT, StageContext], StageOutput]
    version: str  # bump when the computation changes: it enters config_hash and code_version
    summary: str
    table: str | None = None  # the per-sample table a stage writes (selections write `selections`)
    schema_file: str | None = None  # DDL under sql/, applied idempotently
    # stages: the pyarrow schema of the rows `run` stages (sample_id + the kind's columns); the table is
    # stage + config_hash + these columns (tests/stages/test_schema_agreement.py checks both and the lineage)
    rows_schema: pa.Schema | None = None
    # output column -> the `samples` columns it is computed from (Dagster column lineage)
    column_lineage: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tags: tuple[str, ...] = ("python",)  # Dagster `kinds` shown in the UI
    # a kind that adds samples (LIFT expansion): it covers only original samples and every
    # other stage of the pipeline runs after it
    generates_samples: bool = False
    # more writes in the stage's transaction, after its rows (new samples, checkpoint records):
    # (con, stage, config_hash, output)
    write_extra: Callable[[Any, str, str, Any], None] | None = None
    # per-sample and incremental (no training on the pool, no generated samples): `shards` may split it
    shardable: bool = False
    # False for tables with several rows per sample (per checkpoint, variant, round): they stay out
    # of the one-row-per-sample `sample_scores` view
    one_row_per_sample: bool = True

    def config_hash(self, spec: StageSpec, upstream_hashes: Mapping[str, str] | None = None) -> str:
        config = {key: value for key, value in spec.hashed_config().items() if key != "shards"}
        if spec.upstream_stages():
            if upstream_hashes is None:
                raise ValueError(f"{spec.name}: config hash needs the hashes of {spec.upstream_stages()}")
            config = {**config, "upstream": {name: upstream_hashes[name] for name in spec.upstream_stages()}}
        return config_hash(self.kind, self.version, config)


def pipeline_config_hashes(specs: list[StageSpec]) -> dict[str, str]:
    """Config hash of every stage/selection, upstream stages first (see `upstream_stages`)."""
    by_name = {spec.name: spec for spec in specs}
    hashes: dict[str, str] = {}

    def resolve(name: str, trail: tuple[str, ...] = ()) -> str:
        if name not in hashes:
            if name in trail:
                raise ValueError(f"stages read each other in a cycle: {' -> '.join((*trail, name))}")
            spec = by_name[name]
            for upstream in spec.upstream_stages():
                resolve(upstream, (*trail, name))
            hashes[name] = get_kind(spec.kind).config_hash(spec, hashes)
        return hashes[name]

    for spec in specs:
        resolve(spec.name)
    return hashes


def config_hash(kind: str, version: str, config: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over kind, kind version and canonical JSON config."""
    payload = json.dumps(
        {"kind": kind, "version": version, "config": config}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


_REGISTRY: dict[str, StageKind[Any]] = {}
_ENTRY_POINT_GROUP = "curation_assets.stage_kinds"
_loaded = False


def register_kind(kind: StageKind[SpecT]) -> StageKind[SpecT]:
    existing = _REGISTRY.get(kind.kind)
    if existing is not None and existing is not kind and existing.spec is not kind.spec:
        raise ValueError(f"stage kind {kind.kind!r} is already registered by {existing.spec.__module__}")
    kind_field = kind.spec.model_fields.get("kind")
    if kind_field is None or getattr(kind_field.annotation, "__args__", None) != (kind.kind,):
        raise TypeError(f"{kind.spec.__name__}.kind must be Literal[{kind.kind!r}]")
    _REGISTRY[kind.kind] = kind
    return kind


def all_kinds() -> dict[str, StageKind[Any]]:
    _load_kinds()
    return dict(_REGISTRY)


def kinds_for(role: Role) -> list[StageKind[Any]]:
    return [k for k in all_kinds().values() if k.role == role]


def get_kind(name: str) -> StageKind[Any]:
    kinds = all_kinds()
    if name not in kinds:
        raise KeyError(f"unknown stage kind {name!r}; known: {', '.join(sorted(kinds))}")
    return kinds[name]


def _load_kinds() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module("curation_assets.stages.builtin")
    for entry_point in importlib.metadata.entry_points(group=_ENTRY_POINT_GROUP):
        importlib.import_module(entry_point.value)
