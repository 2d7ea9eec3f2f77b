"""Pipeline documents (the dict a defs.yaml holds) for the tests that build one per test, and the
stage blocks several of them configure the same way on the tiny random Llama (tests/support/models.py)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.support.files import PIPELINE_TYPE

# LESS's LoRA warm-up, shrunk for the tiny Llama: rank 4 on q/v, 2 epochs of batch 2
LORA = {
    "r": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ["q_proj", "v_proj"],
    "lr": 0.01,
    "epochs": 2,
    "batch_size": 2,
    "warmup_ratio": 0.0,
}


def pipeline_document(
    name: str,
    stages: Iterable[dict[str, Any]] | None = (),
    selections: Iterable[dict[str, Any]] | None = None,
    *,
    source_path: str = "pool.jsonl",
    source_format: str | None = None,
    automation: str | dict[str, Any] | None = "none",
    **attributes: Any,
) -> dict[str, Any]:
    """Pipeline `name` on the DuckDB file `<name>.duckdb`, one source `pool` (`source_path`, in
    `source_format` if given), `stages` and `selections` (each key left out when None) and
    `automation` (a condition, or the whole block; left out when None). `attributes` add keys or replace
    these (`sources=[...]`); one set to None is left out, and a `store` block replaces the DuckDB file."""
    source = {"name": "pool", "path": source_path, **({"format": source_format} if source_format else {})}
    document: dict[str, Any] = {"name": name, "duckdb_path": f"{name}.duckdb", "sources": [source]}
    if stages is not None:
        document["stages"] = list(stages)
    if selections is not None:
        document["selections"] = list(selections)
    if automation is not None:
        document["automation"] = {"condition": automation} if isinstance(automation, str) else automation
    if "store" in attributes:
        del document["duckdb_path"]
    document.update(attributes)
    return {"type": PIPELINE_TYPE, "attributes": {k: v for k, v in document.items() if v is not None}}


def tiny_lm_stage(name: str, kind: str, model: Path | str, **options: Any) -> dict[str, Any]:
    """Stage `name` of `kind` on `model`, 64 tokens a sample."""
    return {"name": name, "kind": kind, "model": str(model), "max_length": 64, **options}


def lora_warmup_stage(model: Path | str, **options: Any) -> dict[str, Any]:
    """`warmup`: LESS's LoRA warm-up of `model` (LORA) on 30 % of the pool."""
    return tiny_lm_stage("warmup", "lora_warmup", model, **{"train_fraction": 0.3, "lora": LORA, **options})


def jvp_stage(model: Path | str, **options: Any) -> dict[str, Any]:
    """`jvp`: Influence Distillation's JVP embeddings of `model` through one block, batches of 4."""
    return tiny_lm_stage("jvp", "jvp_embeddings", model, **{"num_blocks": 1, "batch_size": 4, **options})


def target_block(**options: Any) -> dict[str, Any]:
    """Target `task` from target.jsonl (tests.components.test_less_pipeline.write_targets): subtasks
    by `cat`, 6 validation samples split with seed 1."""
    return {
        "name": "task",
        "path": "target.jsonl",
        "subtask_field": "cat",
        "validation_size": 6,
        "split_seed": 1,
        **options,
    }
