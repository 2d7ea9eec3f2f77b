"""Files of a trained scorer (a regression head, a LoRA adapter) and their SHA-256 hashes, so
the table that records a scorer says exactly which bytes produced its scores."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from curation_assets.models.causal_lm import file_sha256


class ScorerArtifactError(RuntimeError):
    pass


def hash_files(folder: Path) -> dict[str, str]:
    """File name -> SHA-256 for every file directly in `folder`."""
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def verify_files(folder: Path, expected: Mapping[str, str], owner: str) -> None:
    """Fail with a clear message when a recorded file is missing or changed."""
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise ScorerArtifactError(f"{owner}: scorer file missing: {path} (re-materialise the training stage)")
        if file_sha256(path) != digest:
            raise ScorerArtifactError(
                f"{owner}: scorer file changed since training: {path} (its SHA-256 differs "
                "from the recorded one; re-materialise the training stage)"
            )
