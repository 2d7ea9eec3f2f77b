"""Write a pipeline YAML, materialise every asset in-process, insist every asset check passed."""

from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from curation_assets.components.pipeline import CurationPipeline
from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions


def materialize_document(folder: Path, document: dict[str, Any]) -> CurationPipeline:
    path = folder / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    component = load_pipeline_file(path)
    definitions = pipeline_definitions(component)
    result = dg.materialize([*definitions.assets, *(definitions.asset_checks or [])], raise_on_error=True)
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    assert not failed, f"asset checks failed: {failed}"
    return component
