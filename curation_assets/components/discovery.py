"""Which pipeline a `curation` command means when none is named: the one in the current folder.

1. The YAML files directly in the folder (`*.yaml`, `*.yml`) whose top-level `type:` is
   `curation_assets.CurationPipeline` (a pipeline folder: `defs.yaml` beside its data).
2. Else, when the folder is a dg project (its pyproject.toml has `[tool.dg.project]`), every
   `defs.yaml` of that type under the project's defs module (`defs_module`, by default
   `<root_module>.defs`, at `<folder>/<module path>` or `<folder>/src/<module path>`).

Exactly one found: that one. None, or more than one: an error saying so (listing them) and
asking for the pipeline by name; there is no default pipeline.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: tomli, a dependency of dagster
    import tomli as tomllib

PIPELINE_TYPES = {
    "curation_assets.CurationPipeline",
    "curation_assets.components.CurationPipeline",
    "curation_assets.components.pipeline.CurationPipeline",
}  # = standalone.COMPONENT_TYPES
_TYPE_LINE = re.compile(r"""^type:\s*["']?([\w.]+)["']?\s*(?:#.*)?$""", re.MULTILINE)


class NoPipelineError(ValueError):
    """No pipeline, or more than one, in the folder."""


def is_pipeline_file(path: Path) -> bool:
    """Whether `path` is a YAML file whose top-level `type:` names the pipeline component (its first
    document; the file need not be valid: loading it reports what is wrong)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    first_document = re.split(r"^---\s*$", text, maxsplit=1, flags=re.MULTILINE)
    document = first_document[0] if first_document[0].strip() or len(first_document) == 1 else first_document[1]
    match = _TYPE_LINE.search(document)
    return bool(match and match.group(1) in PIPELINE_TYPES)


def dg_defs_folder(folder: Path) -> Path | None:
    """The defs module folder of the dg project rooted at `folder`, if it is one."""
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        settings = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    project = settings.get("tool", {}).get("dg", {}).get("project")
    if not isinstance(project, dict) or not isinstance(project.get("root_module"), str):
        return None
    module = project.get("defs_module") or f"{project['root_module']}.defs"
    relative = Path(*str(module).split("."))
    for candidate in (folder / relative, folder / "src" / relative):
        if candidate.is_dir():
            return candidate
    return None


def pipelines_in(folder: Path) -> list[Path]:
    """The pipeline YAML files the folder holds, by the rules above, sorted."""
    here = sorted(
        p for pattern in ("*.yaml", "*.yml") for p in folder.glob(pattern) if p.is_file() and is_pipeline_file(p)
    )
    if here:
        return here
    defs = dg_defs_folder(folder)
    if defs is None:
        return []
    return sorted(p for p in defs.rglob("defs.yaml") if is_pipeline_file(p))


def pipeline_in(folder: Path, how_to_name: str) -> Path:
    """The one pipeline of `folder`; `how_to_name` (e.g. "--pipeline PIPELINE.yaml") ends the errors."""
    found = pipelines_in(folder)
    if len(found) == 1:
        return found[0]
    if not found:
        raise NoPipelineError(
            f"no pipeline given, and {folder} holds none (no YAML file of type curation_assets.CurationPipeline "
            f"here, nor a dg project's defs.yaml); give {how_to_name}"
        )
    listed = "\n".join(f"  {_relative(p, folder)}" for p in found)
    raise NoPipelineError(f"no pipeline given, and {folder} holds {len(found)}:\n{listed}\ngive {how_to_name}")


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)
