"""Load a pipeline YAML file outside a dg project (for `curation run PIPELINE.yaml`).

Validation and error messages are the same as under `dg check defs`: the file is parsed
with source positions, validated against the pipeline schema, templates are rendered and
cross-field checks run. `{{ context.project_root }}` is the nearest folder above the YAML
holding a pyproject.toml (else the YAML's folder).
"""

from pathlib import Path
from types import SimpleNamespace

import dagster as dg
from dagster._utils.pydantic_yaml import enrich_validation_errors_with_source_position
from dagster.components.resolved.context import ResolutionContext
from dagster_shared.yaml_utils import parse_yaml_with_source_position

from curation_assets.components.pipeline import CurationPipeline
from curation_assets.components.resources import resource_files, resources_from_files
from curation_assets.components.spec import pipeline_spec_model

COMPONENT_TYPES = {
    "curation_assets.CurationPipeline",
    "curation_assets.components.CurationPipeline",
    "curation_assets.components.pipeline.CurationPipeline",
}


class PipelineFileError(ValueError):
    pass


def find_project_root(start: Path) -> Path:
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").exists():
            return folder
    return start


def load_pipeline_file(path: Path) -> CurationPipeline:
    path = Path(path).resolve()
    if not path.is_file():
        raise PipelineFileError(f"pipeline file not found: {path}")
    parsed = parse_yaml_with_source_position(path.read_text(encoding="utf-8"), filename=str(path))
    document = parsed.value
    if not isinstance(document, dict) or document.get("type") not in COMPONENT_TYPES:
        raise PipelineFileError(f"{path}: expected `type: curation_assets.CurationPipeline` at the top")
    attributes_tree = parsed.source_position_tree.children.get("attributes")
    if attributes_tree is None:
        raise PipelineFileError(f"{path}: no `attributes:` block")
    with enrich_validation_errors_with_source_position(attributes_tree, ["attributes"]):
        attributes = pipeline_spec_model().model_validate(document["attributes"])
    project_root = find_project_root(path.parent)
    scope = SimpleNamespace(project_root=str(project_root))
    resolution = ResolutionContext.default(parsed.source_position_tree).with_scope(context=scope)
    # `resources.py` defs modules from the project root down to the YAML's folder, as dg would find them
    resources = resources_from_files(resource_files(path.parent, project_root))
    component = CurationPipeline.from_attributes(
        attributes, resolution.at_path("attributes"), path.parent, resources=resources, project_root=project_root
    )
    component.resources = {key: resources[key] for key in component.resource_keys_used()}
    return component


def pipeline_definitions(component: CurationPipeline) -> dg.Definitions:
    """The pipeline's assets, with the resources it names bound (outside a dg project nothing else binds them)."""
    defs = component.build_defs(None)
    return dg.Definitions.merge(defs, dg.Definitions(resources=component.resources)) if component.resources else defs
