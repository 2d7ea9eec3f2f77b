"""The public extension point: a third-party kind calls `register_kind(StageKind(...))` with a
`StageSpec` subclass (or ships a module in the `curation_assets.stage_kinds` entry-point group).
Everything here lives in `curation_assets.stages.core.registry`."""

from curation_assets.stages.core.registry import (
    NAME_PATTERN,
    RESERVED_NAMES,
    Role,
    StageKind,
    StageSpec,
    all_kinds,
    config_hash,
    get_kind,
    kinds_for,
    pipeline_config_hashes,
    register_kind,
    selection_reference_problems,
    stage_reference_problems,
)

__all__ = [
    "NAME_PATTERN",
    "RESERVED_NAMES",
    "Role",
    "StageKind",
    "StageSpec",
    "all_kinds",
    "config_hash",
    "get_kind",
    "kinds_for",
    "pipeline_config_hashes",
    "register_kind",
    "selection_reference_problems",
    "stage_reference_problems",
]
