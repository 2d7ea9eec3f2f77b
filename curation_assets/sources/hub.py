"""`hf_dataset` sources: where they are read from, and their data version.

The data version is what makes a source stale in Dagster (the observable source asset):
- a local dataset folder (`hf_dataset` names an existing folder, e.g. Parquet/JSON files or a
  Hub-layout folder written by `curation export --format hub`): `local:` + the content hash of the
  folder, so editing, adding or removing a file makes the source stale;
- a Hub dataset online: `hub:<name>@<commit>`, the commit `revision` (default `main`) resolves to
  through the Hub API, so a new commit on an unpinned branch makes the source stale;
- a Hub dataset offline (`HF_HUB_OFFLINE=1`): the commit the local Hugging Face cache recorded for
  that revision (`refs/<revision>`), or the revision itself when it is a full commit hash.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from curation_assets.sources.fingerprint import file_fingerprint
from curation_assets.sources.records import SourceReadError
from curation_assets.sources.spec import SourceSpec

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def local_dataset_dir(spec: SourceSpec, base_dir: Path) -> Path | None:
    """The folder `hf_dataset` names when it is a local folder (relative to the YAML file), else None."""
    if not spec.hf_dataset:
        return None
    path = Path(spec.hf_dataset).expanduser()
    path = path if path.is_absolute() else base_dir / path
    return path.resolve() if path.is_dir() else None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_revision(name: str, revision: str | None) -> str:
    """The commit `revision` (default `main`) of Hub dataset `name` points at: from the Hub API
    online, from the local cache's `refs/` offline; a full commit hash is its own answer."""
    wanted = revision or "main"
    if _COMMIT.match(wanted):
        return wanted
    if hub_offline():
        return _cached_commit(name, wanted)
    from huggingface_hub import HfApi

    try:
        sha = HfApi().dataset_info(name, revision=wanted).sha
    except Exception as err:  # network, 404, gated: the message says which
        raise SourceReadError(f"cannot resolve revision {wanted!r} of Hugging Face dataset {name!r}: {err}") from err
    if not sha:
        raise SourceReadError(f"the Hub gave no commit for revision {wanted!r} of dataset {name!r}")
    return sha


def _cached_commit(name: str, revision: str) -> str:
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}" / "refs" / revision
    try:
        sha = ref.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError) as err:
        raise SourceReadError(
            f"HF_HUB_OFFLINE is set and the Hugging Face cache has no revision {revision!r} of dataset {name!r} "
            f"({ref} is missing): download it once online, pin `revision` to a commit hash, or unset HF_HUB_OFFLINE"
        ) from err
    if not _COMMIT.match(sha):
        raise SourceReadError(f"{ref} holds {sha[:60]!r}, not a commit hash; delete it and download again online")
    return sha


def hub_data_version(spec: SourceSpec, base_dir: Path) -> str:
    """The data version of an `hf_dataset` source (see the module docstring)."""
    assert spec.hf_dataset
    local = local_dataset_dir(spec, base_dir)
    if local is not None:
        return f"local:{file_fingerprint(local)}"
    return f"hub:{spec.hf_dataset}@{resolve_revision(spec.hf_dataset, spec.revision)}"
