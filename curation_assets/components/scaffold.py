"""`dg scaffold defs curation_assets.CurationPipeline NAME`: a starter pipeline that loads and runs.

Writes NAME/defs.yaml (one source, length statistics, a top-score selection, a JSONL export) and
NAME/records.jsonl with three Alpaca-format records to replace with real data. With
`--json-params '{"source": "data/pool.jsonl"}'` the YAML reads that file instead (relative to the
new folder, or absolute) and no records.jsonl is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
from pydantic import BaseModel, Field

from curation_assets.stages.core.registry import NAME_PATTERN

STARTER_RECORDS = [
    {"instruction": "Name the largest planet in the solar system.", "input": "", "output": "Jupiter."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour."},
    {
        "instruction": "Give one tip for writing clear documentation.",
        "input": "",
        "output": "Start with a short example that works, then explain each option it uses.",
    },
]

STARTER_YAML = """\
# A curation pipeline (README: "YAML reference"; docs/reference/ lists every stage kind).
# Check it with `dg check defs`; run it in the UI (`dg dev`) or in a terminal (`curation run {yaml}`).
type: {type_name}
attributes:
  name: {name}
  # one DuckDB file per pipeline; or `store: {{resource: curation_store}}` (a CurationStore resource)
  duckdb_path: "{{{{ context.project_root }}}}/.curation/{name}.duckdb"
  sources:
    - name: records
      path: {source}
      format: auto
  stages:
    - name: lengths
      kind: text_stats
  selections:
    - name: longest_answers
      kind: top_score
      stage: lengths
      column: output_words
      budget: 2
  exports:
    - selection: longest_answers
      path: longest_answers.jsonl
"""


class PipelineScaffoldParams(BaseModel):
    source: str | None = Field(None, description="JSONL/JSON/Parquet file of records; default: a starter file.")


class CurationPipelineScaffolder(dg.Scaffolder[PipelineScaffoldParams]):
    """Writes a starter pipeline YAML (and sample records) that `dg check defs` accepts."""

    @classmethod
    def get_scaffold_params(cls) -> type[PipelineScaffoldParams]:
        return PipelineScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[PipelineScaffoldParams]) -> None:
        folder = Path(request.target_path)
        if request.scaffold_format != "yaml" or request.append:
            raise ValueError("curation_assets.CurationPipeline is scaffolded as a new folder with a defs.yaml")
        name = pipeline_name(folder.name)
        folder.mkdir(parents=True, exist_ok=True)
        source = request.params.source if request.params is not None else None
        if source is None:
            source = "records.jsonl"
            (folder / source).write_text("".join(json.dumps(r) + "\n" for r in STARTER_RECORDS), encoding="utf-8")
        (folder / "defs.yaml").write_text(
            STARTER_YAML.format(
                type_name="curation_assets.CurationPipeline",
                name=name,
                source=json.dumps(source),
                yaml=_shown(folder / "defs.yaml", request.project_root),
            ),
            encoding="utf-8",
        )


def _shown(path: Path, project_root: Path | None) -> Path:
    """`path` relative to the project root when inside it (how it is typed from there)."""
    try:
        return path.resolve().relative_to(Path(project_root).resolve()) if project_root else path
    except ValueError:
        return path


def pipeline_name(folder_name: str) -> str:
    """A valid pipeline name from a folder name (`My-Pipeline` -> `my_pipeline`)."""
    name = re.sub(r"[^a-z0-9_]+", "_", folder_name.lower()).strip("_")
    name = name if name and name[0].isalpha() else f"pipeline_{name}".rstrip("_")
    name = name[:63]
    assert re.match(NAME_PATTERN, name), name
    return name
