"""Small pipeline YAML files and alpaca sources for the component and CLI tests.

Import from a test module with::

    sys.path.insert(0, str(Path(__file__).resolve().parents[N]))  # the tests/ folder
    from pipeline_files import ...
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

PIPELINE_TYPE = "curation_assets.CurationPipeline"


def alpaca_records(n: int = 30) -> list[dict[str, Any]]:
    """`n` distinct alpaca records whose output lengths differ (record i has i + 1 output words)."""
    records = []
    for i in range(n):
        records.append({
            "instruction": f"Task {i}: describe the number {i}.",
            "input": "" if i % 3 else f"context for {i}",
            "output": " ".join(f"w{i}_{j}" for j in range(i + 1)),
            "id": f"rec-{i:03d}",  # extra fields: jsonl export must keep them as they were
            "meta": {"lang": "fr" if i % 5 == 0 else "en", "weight": i / 4, "tags": ["café ✓", i]},
        })
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def valid_pipeline_yaml(*, name: str = "tiny", source_path: str = "data/alpaca.jsonl",
                        duckdb_path: str = "tiny.duckdb", budget: int = 5, seed: int = 0,
                        top_description: str | None = None, exports: str = "") -> str:
    """A pipeline with one source, a text_stats stage, a random and a top_score selection."""
    text = """\
        type: curation_assets.CurationPipeline
        attributes:
          name: {name}
          duckdb_path: {duckdb_path}
          sources:
            - name: alpaca
              path: {source_path}
              format: alpaca
          stages:
            - name: lengths
              kind: text_stats
          selections:
            - name: random_few
              kind: random
              budget: 4
              seed: {seed}
            - name: longest
              kind: top_score
              stage: lengths
              column: output_words
              budget: {budget}{description}
        """
    description = f"\n      description: {top_description}" if top_description else ""
    text = textwrap.dedent(text).format(
        name=name, duckdb_path=duckdb_path, source_path=source_path, budget=budget, seed=seed,
        description=description)
    if exports:
        text += "  exports:\n" + textwrap.indent(textwrap.dedent(exports), "    ")
    return text


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the `occurrence`-th line of `text` containing `needle`."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} (occurrence {occurrence}) not in:\n{text}")


def write_pipeline(folder: Path, text: str, *, records: int = 30) -> Path:
    """Write `text` as folder/defs.yaml next to a data/alpaca.jsonl source; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "data" / "alpaca.jsonl", alpaca_records(records))
    yaml_file = folder / "defs.yaml"
    yaml_file.write_text(text, encoding="utf-8")
    return yaml_file
