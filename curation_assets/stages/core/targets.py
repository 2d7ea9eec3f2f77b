"""Target tasks of target-aware selections (`less`, `influence_distillation`, `target_similarity`,
`instruction_mining_fit`): records read like a source, split with a seed into a validation part
(used for selection) and a held-out part (kept in `target_samples` for evaluation)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from curation_assets.arrow_compute import pc
from curation_assets.sources.ingest import stage_source
from curation_assets.sources.spec import SourceSpec
from curation_assets.stages.core.registry import StageSpec
from curation_assets.store.sql_files import execute_sql_file

if TYPE_CHECKING:
    from curation_assets.stages.core.context import StageContext, StageOutput

TARGET_SCHEMA = pa.schema(
    [
        ("target", pa.string()),
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("subtask", pa.string()),
        ("instruction", pa.string()),
        ("output", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("input", pa.string()),
    ]
)


class TargetSpec(SourceSpec):
    """A target task: records read like a source, split into validation and held-out parts."""

    subtask_field: str | None = Field(None, description="Record field naming each sample's subtask.")
    validation_size: int = Field(
        50, gt=0, description="Samples (per target) used for selection; the rest is held out for evaluation."
    )
    split_seed: int = Field(0, description="Seed of the validation / held-out split.")


class TargetsInput(StageSpec):
    """The file checks of a spec's `targets` (each kind declares the field with its own description)."""

    if TYPE_CHECKING:
        targets: list[TargetSpec]

    def check_files(self, base_dir: Path) -> list[tuple[str, str]]:
        paths = [base_dir / Path(t.path).expanduser() for t in self.targets if t.path]
        return [
            *super().check_files(base_dir),
            *[("targets", f"target file not found: {path}") for path in paths if not path.exists()],
        ]

    def with_base_dir(self, base_dir: Path) -> StageSpec:
        targets = [
            t.model_copy(update={"path": str(base_dir / Path(t.path).expanduser())}) if t.path else t
            for t in self.targets
        ]
        return super().with_base_dir(base_dir).model_copy(update={"targets": targets})


def read_target(target: TargetSpec, staging: Path) -> pa.Table:
    """The target's samples with split and subtask (validation first)."""
    staging.mkdir(parents=True, exist_ok=True)
    result = stage_source(target, Path("/"), staging)
    samples = pq.read_table(result.samples_file)
    order = np.random.default_rng(target.split_seed).permutation(samples.num_rows)
    samples = samples.take(pa.array(order))
    raw = [json.loads(r) if r else {} for r in samples.column("raw_record").to_pylist()]
    subtasks = [str(r.get(target.subtask_field, "")) if target.subtask_field else "all" for r in raw]
    splits = ["validation" if i < target.validation_size else "heldout" for i in range(samples.num_rows)]
    return pa.table(
        {
            "target": [target.name] * samples.num_rows,
            "sample_id": samples.column("sample_id"),
            "split": splits,
            "subtask": subtasks,
            "instruction": samples.column("instruction"),
            "output": samples.column("output"),
            "messages": samples.column("messages"),
            "input": samples.column("input"),
        },
        schema=TARGET_SCHEMA,
    )


def validation_targets(ctx: StageContext, targets: list[TargetSpec]) -> tuple[pa.Table, pa.Table, list[str]]:
    """(every target sample, the validation part, a `target:subtask` label per validation sample)."""
    with tempfile.TemporaryDirectory(dir=ctx.staging_dir) as staging:
        table = pa.concat_tables([read_target(t, Path(staging) / t.name) for t in targets])
    validation = table.filter(pc.equal(table.column("split"), "validation"))
    labels = [
        f"{t}:{s}" for t, s in zip(validation.column("target").to_pylist(), validation.column("subtask").to_pylist())
    ]
    return table, validation, labels


def targets_writer(sql_file: str) -> Callable[[Any, str, str, StageOutput], None]:
    """The `write_extra` of a target-aware selection: `sql_file` replaces the selection's rows from the
    run's staged `targets_file` and, where the run staged one, its per-sample `scores_file`."""

    def write_targets(con: Any, stage: str, config_hash: str, output: StageOutput) -> None:
        files = {key: output.extra[key] for key in ("targets_file", "scores_file") if key in output.extra}
        execute_sql_file(con, sql_file, {"selection": stage, **files})

    return write_targets
