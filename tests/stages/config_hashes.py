"""Config hashes of every shipped pipeline's stages plus the kinds no shipped pipeline uses.

`python -m tests.stages.config_hashes` writes `config_hashes.json` next to this file (run once,
before the #20 restructure of `curation_assets/stages/`); `test_config_hashes.py` recomputes the
hashes and compares, so moving code around cannot silently recompute stored rows.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml

from curation_assets.components.standalone import load_pipeline_file
from curation_assets.stages.core.registry import pipeline_config_hashes

DEFS = Path(__file__).resolve().parents[2] / "curation_assets" / "defs"
FIXTURE = Path(__file__).with_name("config_hashes.json")

# kinds no shipped pipeline uses, and non-default values of keys that must stay out of the hash
EXTRA_STAGES = [
    {"name": "lengths_pool", "kind": "text_stats", "input_selection": "pool", "batch_size": 17},
    {"name": "embed_small_batch", "kind": "embedding", "template": "{instruction}", "batch_size": 3},
    {"name": "loss", "kind": "lm_loss", "model": "packaged:SmolLM2-135M-Instruct", "batch_size": 2},
    {"name": "grand", "kind": "grand", "model": "packaged:SmolLM2-135M-Instruct"},
    {"name": "expand", "kind": "lift_expand", "rounds": 2, "chunk_size": 5},
    {"name": "judge_chunked", "kind": "alpagasus", "chunk_size": 3, "turns": "last"},
    {
        "name": "mining_words",
        "kind": "instruction_mining_indicators",
        "length_unit": "words",
        "tokenizer": "packaged:SmolLM2-135M-Instruct",
        "batch_size": 4,
    },
]
EXTRA_SELECTIONS = [
    {"name": "pool", "kind": "random", "budget": 10, "seed": 3},
    {
        "name": "diet",
        "kind": "data_diet_dynamic",
        "model": "packaged:SmolLM2-135M-Instruct",
        "score": "grand",
        "epochs": 2,
    },
    {
        "name": "window",
        "kind": "quantile_window",
        "stage": "lengths_pool",
        "column": "output_words",
        "size": 0.3,
        "offset": 0.1,
    },
]


def shipped_hashes() -> dict[str, dict[str, str]]:
    """Pipeline name -> stage name -> config hash, for every `defs/*/defs.yaml`."""
    hashes = {}
    for path in sorted(DEFS.glob("*/defs.yaml")):
        spec = load_pipeline_file(path).spec
        hashes[path.parent.name] = pipeline_config_hashes([*spec.stages, *spec.selections])
    return hashes


def extra_hashes() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pool.jsonl").write_text('{"instruction": "a", "input": "", "output": "b"}\n')
        document = {
            "type": "curation_assets.CurationPipeline",
            "attributes": {
                "name": "extra",
                "duckdb_path": str(Path(tmp) / "x.duckdb"),
                "sources": [{"name": "data", "path": "pool.jsonl"}],
                "stages": EXTRA_STAGES,
                "selections": EXTRA_SELECTIONS,
            },
        }
        (Path(tmp) / "defs.yaml").write_text(yaml.safe_dump(document))
        spec = load_pipeline_file(Path(tmp) / "defs.yaml").spec
        return pipeline_config_hashes([*spec.stages, *spec.selections])


def all_hashes() -> dict[str, dict[str, str]]:
    return {**shipped_hashes(), "_extra": extra_hashes()}


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(all_hashes(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
