"""Source files and small pipeline YAML files for the tests: the one JSONL writer
(`write_jsonl`), alpaca records, a valid pipeline and its folder."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PIPELINE_TYPE = "curation_assets.CurationPipeline"


def alpaca_records(n: int = 30) -> list[dict[str, Any]]:
    """`n` distinct alpaca records whose output lengths differ (record i has i + 1 output words)."""
    records = []
    for i in range(n):
        records.append(
            {
                "instruction": f"Task {i}: describe the number {i}.",
                "input": "" if i % 3 else f"context for {i}",
                "output": " ".join(f"w{i}_{j}" for j in range(i + 1)),
                "id": f"rec-{i:03d}",  # extra fields: jsonl export must keep them as they were
                "meta": {"lang": "fr" if i % 5 == 0 else "en", "weight": i / 4, "tags": ["café ✓", i]},
            }
        )
    return records


def write_jsonl(path: Path, records: Iterable[Any], *, append: bool = False) -> Path:
    """One JSON value per line (UTF-8), a str written verbatim (a malformed line); `append` adds to
    an existing file (a growing source)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return path


def valid_pipeline_yaml(
    *,
    name: str = "tiny",
    source_path: str = "data/alpaca.jsonl",
    duckdb_path: str = "tiny.duckdb",
    budget: int = 5,
    seed: int = 0,
    top_description: str | None = None,
    exports: str = "",
) -> str:
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
        name=name, duckdb_path=duckdb_path, source_path=source_path, budget=budget, seed=seed, description=description
    )
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


# Words of the tiny Llama's vocabulary (tests/support/models.py), so its tokenizer knows every word.
WORDS = "the a of to is and in it you that for on with as are this be what how why".split()


def write_pool(path: Path, n: int) -> Path:
    """`n` alpaca records in the tiny Llama's words, of varied lengths, plus one with an empty response."""
    records = []
    for i in range(n):
        instruction = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 7))
        output = " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(1 + i % 11))
        records.append({"instruction": f"q{i % 10} {instruction}", "input": "", "output": output})
    records.append({"instruction": "q1 hello", "input": "", "output": ""})  # empty response
    return write_jsonl(path, records)


def write_samples(path: Path, n: int, start: int = 0) -> Path:
    """Append `n` alpaca records of random Greek-letter words (seeded by `start`), then an exact-content
    near duplicate of the file's first record (its instruction upper-cased), for the embedding tests."""
    import numpy as np

    rng = np.random.default_rng(start)
    words = ["alpha", "beta", "gamma", "delta", "omega", "theta", "kappa", "sigma", "zeta", "lambda"]
    records = []
    for i in range(start, start + n):
        text = " ".join(rng.choice(words, size=int(rng.integers(3, 12))))
        records.append({"instruction": f"Task {i}: {text}", "input": "", "output": f"Answer {i}"})
    write_jsonl(path, records, append=True)
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    return write_jsonl(path, [{**first, "instruction": first["instruction"].upper()}], append=True)
