"""Stage `grad_features` (LESS): Adam-preconditioned, projected per-sample LoRA gradients of
every sample at every checkpoint of a `lora_warmup` stage, from one batched backward pass per
batch (models/gradients.py). Stored as FLOAT[] rows (sample, checkpoint); the `less`
selection normalises them and scores them against target gradients.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation_assets.models.warmup_checkpoints import ProjectionKind, make_projector
from curation_assets.stages.core.causal_lm import CHUNK_SAMPLES
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.registry import StageKind, StageSpec, register_kind, stage_reference_problems
from curation_assets.stages.core.warmup import WarmupModel

FEATURES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("checkpoint", pa.int32()),
        ("features", pa.list_(pa.float32())),
        ("n_response_tokens", pa.int32()),
    ]
)


class GradFeaturesSpec(StageSpec):
    """Projected per-sample gradient features at each warm-up checkpoint (LESS)."""

    kind: Literal["grad_features"]
    warmup: str = Field(description="The `lora_warmup` stage whose checkpoints are used.")
    projection: ProjectionKind = Field(
        "kronecker",
        description=(
            "kronecker: LoGra-style per-layer Lᵀ G R sketch, cheap on CPU; dense: LESS's seeded Rademacher "
            "projection of the flattened gradient (exact reproduction; expensive for large adapters)."
        ),
    )
    dim: int = Field(8192, gt=0, description="Projected dimensions (published: 8192).")
    seed: int = Field(0, description="Projection seed (targets are projected with the same).")
    epsilon_inside_sqrt: bool = Field(
        True,
        description=(
            "Adam update direction m'/√(v'+ε) as the released LESS code computes it (true), or m'/(√v'+ε) as the "
            "paper writes it (false)."
        ),
    )
    batch_size: int = Field(8, gt=0, description="Samples per backward pass (halved on out-of-memory).")

    def references(self) -> dict[str, str]:
        return {**super().references(), "warmup": self.warmup}

    def upstream_stages(self) -> list[str]:
        return [self.warmup]

    UNHASHED: ClassVar[frozenset[str]] = frozenset({"batch_size"})  # does not change results

    def check_references(self, stage_kinds: Any, selection_names: set[str]) -> list[tuple[str, str]]:
        return [
            *super().check_references(stage_kinds, selection_names),
            *stage_reference_problems("warmup", self.warmup, ("lora_warmup",), stage_kinds, selection_names),
        ]


def run_grad_features(spec: GradFeaturesSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("grad_features", ["messages"])
    stats: dict[str, Any] = {"pending": count, "projection": spec.projection}
    # one committed part per chunk (every checkpoint of its samples): an interrupted run resumes there
    writer = ctx.resumable_rows_writer("grad_features", FEATURES_SCHEMA)
    if count:
        warm = WarmupModel(ctx, spec.warmup)
        projector = make_projector(warm.model, spec.projection, spec.dim, spec.seed)
        stats.update({"dim": projector.dim, "checkpoints": len(warm.checkpoints), "device": warm.device.describe()})
        chunks = iter_parquet_batches(pending, CHUNK_SAMPLES)
        for chunk in ctx.progress(chunks, total=-(-count // CHUNK_SAMPLES), desc=f"gradients of {count} samples"):
            encoded = warm.encode(chunk.column("messages").to_pylist())
            ids = chunk.column("sample_id").to_pylist()
            tables = []
            for record in warm.checkpoints:
                moments = warm.use(record["epoch"])
                features = np.stack(
                    warm.features(encoded, projector, moments, spec.batch_size, stats, spec.epsilon_inside_sqrt)
                )
                offsets = pa.array(np.arange(0, features.size + 1, features.shape[1], dtype=np.int32))
                tables.append(
                    pa.table(
                        {
                            "sample_id": ids,
                            "checkpoint": [record["epoch"]] * len(ids),
                            "features": pa.ListArray.from_arrays(offsets, pa.array(features.reshape(-1), pa.float32())),
                            "n_response_tokens": [e.n_response_tokens for e in encoded],
                        },
                        schema=FEATURES_SCHEMA,
                    )
                )
            writer.write(pa.concat_tables(tables))
    return StageOutput(writer.close(), rows_in=count, stats=stats, metadata=stats)


GRAD_FEATURES = register_kind(
    StageKind(
        kind="grad_features",
        role="stage",
        one_row_per_sample=False,
        shardable=True,
        spec=GradFeaturesSpec,
        run=run_grad_features,
        version="1",
        summary="LESS gradient features: Adam-preconditioned projected LoRA gradients per warm-up checkpoint.",
        table="grad_features",
        schema_file="schema/stages/grad_features.sql",
        rows_schema=FEATURES_SCHEMA,
        column_lineage={"checkpoint": ("messages",), "features": ("messages",), "n_response_tokens": ("messages",)},
        tags=("python", "torch", "peft"),
    )
)
