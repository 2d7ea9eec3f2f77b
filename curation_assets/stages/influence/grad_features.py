"""Stage `grad_features` (LESS): Adam-preconditioned per-sample LoRA gradients of every sample at
every checkpoint of a `lora_warmup` stage, from one batched backward pass per batch
(models/gradients.py). Stored as FLOAT[] rows (sample, checkpoint).

- projected (`kronecker`, `dense`, `hadamard`): the projected gradient; the `less` selection
  normalises it and scores it against target gradients projected the same way.
- `none` (exact): the sample's full gradient is dotted with the plain gradients of the `targets`'
  validation samples (held in memory, recomputed per run) and never stored: `features` holds the
  sample's exact cosine with each validation sample, in target order, which `less` aggregates.
  `compare_projection` also projects the same gradients and records in `stage_runs.stats` how
  the projected LESS scores correlate with the exact ones (issue #19).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curation_assets.models.warmup_checkpoints import ProjectionKind, make_projector
from curation_assets.stages.core.causal_lm import CHUNK_SAMPLES
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.registry import StageKind, register_kind
from curation_assets.stages.core.targets import TargetsInput, TargetSpec, validation_targets
from curation_assets.stages.core.warmup import WarmupModel

FEATURES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("checkpoint", pa.int32()),
        ("features", pa.list_(pa.float32())),
        ("n_response_tokens", pa.int32()),
    ]
)


class GradFeaturesSpec(TargetsInput):
    """Per-sample gradient features at each warm-up checkpoint (LESS): projected, or exact cosines with targets."""

    kind: Literal["grad_features"]
    warmup: str = Field(description="The `lora_warmup` stage whose checkpoints are used.")
    projection: ProjectionKind | Literal["none"] = Field(
        "kronecker",
        description=(
            "Default: none when the stage has `targets`, else kronecker (measured, docs/methods/less.md). "
            "kronecker: LoGra-style per-layer Lᵀ G R sketch, cheap on CPU; dense: LESS's seeded Rademacher "
            "projection of the flattened gradient (exact reproduction; expensive for large adapters); none: no "
            "projection, exact cosines with the `targets`' validation samples (stores m floats per sample and "
            "checkpoint, holds m full target gradients in memory)."
        ),
    )
    dim: int = Field(8192, gt=0, description="Projected dimensions (published: 8192).")
    seed: int = Field(0, description="Projection seed (targets are projected with the same).")
    targets: list[TargetSpec] = Field(
        default_factory=list,
        description=(
            "projection: none only: the target tasks, the same as the `less` selection's (read and split like them)."
        ),
    )
    compare_projection: ProjectionKind | None = Field(
        None,
        description=(
            "projection: none only: also project the same gradients this way (`dim`, `seed`) and record the "
            "Pearson / Spearman correlation of the projected LESS scores with the exact ones in the run's stats "
            "(rows unchanged)."
        ),
    )
    epsilon_inside_sqrt: bool = Field(
        True,
        description=(
            "Adam update direction m'/√(v'+ε) as the released LESS code computes it (true), or m'/(√v'+ε) as the "
            "paper writes it (false)."
        ),
    )
    batch_size: int = Field(8, gt=0, description="Samples per backward pass (halved on out-of-memory).")

    STAGE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"warmup": ("lora_warmup",)}
    UPSTREAM_KEYS: ClassVar[tuple[str, ...]] = ("warmup",)

    # batch_size does not change results; compare_projection adds stats only
    UNHASHED: ClassVar[frozenset[str]] = frozenset({"batch_size", "compare_projection"})

    @model_validator(mode="before")
    @classmethod
    def _default_projection(cls, data: Any) -> Any:
        # exact where the targets are known (bench/results/less_exact.md: as fast, far less stored, and the
        # projected scores correlate only 0.5-0.7 with the exact ones); the targets-free kronecker otherwise
        if isinstance(data, dict) and "projection" not in data:
            data = {**data, "projection": "none" if data.get("targets") else "kronecker"}
        return data

    @model_validator(mode="after")
    def _targets_with_exact_scores(self) -> GradFeaturesSpec:
        if self.projection == "none" and not self.targets:
            raise ValueError(
                "projection: none needs `targets` (those of the `less` selection): exact scores are "
                "cosines with their validation samples"
            )
        if self.projection != "none" and (self.targets or self.compare_projection):
            raise ValueError(
                "`targets` and `compare_projection` are read only with projection: none; projected "
                "features are scored against the `less` selection's targets"
            )
        return self

    def hashed_config(self) -> dict[str, Any]:
        config = super().hashed_config()
        if self.projection == "none":
            for key in ("dim", "seed"):  # they only shape the comparison's projection
                config.pop(key)
        else:
            config.pop("targets")  # empty; kept out so projected stages hash as before targets existed
        return config


def run_grad_features(spec: GradFeaturesSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("grad_features", ["messages"])
    stats: dict[str, Any] = {"pending": count, "projection": spec.projection}
    # one committed part per chunk (every checkpoint of its samples): an interrupted run resumes there
    writer = ctx.resumable_rows_writer("grad_features", FEATURES_SCHEMA)
    if count:
        warm = WarmupModel(ctx, spec.warmup)
        stats.update({"checkpoints": len(warm.checkpoints), "device": warm.device.describe()})
        exact = ExactScoring(spec, ctx, warm, stats) if spec.projection == "none" else None
        projector = None if exact else make_projector(warm.model, spec.projection, spec.dim, spec.seed)  # type: ignore[arg-type]
        if projector is not None:
            stats["dim"] = projector.dim
        chunks = iter_parquet_batches(pending, CHUNK_SAMPLES)
        for chunk in ctx.progress(chunks, total=-(-count // CHUNK_SAMPLES), desc=f"gradients of {count} samples"):
            encoded = warm.encode(chunk.column("messages").to_pylist())
            ids = chunk.column("sample_id").to_pylist()
            tables = []
            for record in warm.checkpoints:
                moments = warm.use(record["epoch"])
                if exact is not None:
                    features = exact.cosines(record["epoch"], encoded, moments)
                else:
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
        if exact is not None:
            exact.record_comparison()
    return StageOutput(writer.close(), rows_in=count, stats=stats, metadata=stats)


class ExactScoring:
    """projection: none — target gradients per checkpoint (held), samples' exact cosines with them,
    and (with `compare_projection`) the projected cosines of the same gradients for the stats."""

    def __init__(self, spec: GradFeaturesSpec, ctx: StageContext, warm: WarmupModel, stats: dict[str, Any]) -> None:
        self.spec, self.warm, self.stats = spec, warm, stats
        _, validation, self.labels = validation_targets(ctx, spec.targets)
        self.targets = warm.encode(validation.column("messages").to_pylist())
        self.compare = (
            make_projector(warm.model, spec.compare_projection, spec.dim, spec.seed)
            if spec.compare_projection
            else None
        )
        self.exact_parts: dict[int, list[np.ndarray]] = {}
        self.projected_parts: dict[int, list[np.ndarray]] = {}
        self._held: tuple[int, Any, np.ndarray | None] | None = None  # (epoch, TargetCosines, projected targets)
        stats.update({"validation_samples": len(self.targets), "stored_floats": len(self.targets)})

    def _target_side(self, epoch: int) -> tuple[Any, np.ndarray | None]:
        """Plain gradients of the validation samples at the loaded checkpoint (one checkpoint held at a time)."""
        from curation_assets.methods.less import TargetCosines
        from curation_assets.methods.projection import FlatGradients, PairedProjector

        if self._held is None or self._held[0] != epoch:
            self._held = None  # free the previous checkpoint's target gradients first
            projector = FlatGradients() if self.compare is None else PairedProjector(FlatGradients(), self.compare)
            rows = np.stack(self.warm.features(self.targets, projector, None, self.spec.batch_size, self.stats))
            import torch

            flat = torch.from_numpy(rows[:, : rows.shape[1] - (self.compare.dim if self.compare else 0)])
            projected = rows[:, flat.shape[1] :] if self.compare else None
            self._held = (epoch, TargetCosines(flat), projected)
        return self._held[1], self._held[2]

    def cosines(self, epoch: int, encoded: list[Any], moments: Any) -> np.ndarray:
        """(samples, validation samples) exact cosines at checkpoint `epoch` (loaded)."""
        from curation_assets.methods.less import projected_cosines
        from curation_assets.methods.projection import PairedProjector

        exact, projected_targets = self._target_side(epoch)
        projector = exact if self.compare is None else PairedProjector(exact, self.compare)
        rows = np.stack(
            self.warm.features(
                encoded, projector, moments, self.spec.batch_size, self.stats, self.spec.epsilon_inside_sqrt
            )
        )
        cosines = rows[:, : exact.dim]
        if self.compare is not None:
            assert projected_targets is not None  # held with the comparison's projector
            self.exact_parts.setdefault(epoch, []).append(cosines)
            self.projected_parts.setdefault(epoch, []).append(
                projected_cosines(rows[:, exact.dim :], projected_targets)
            )
        return cosines

    def record_comparison(self) -> None:
        """stats['projection_correlation']: projected vs exact LESS scores of this run's samples."""
        from curation_assets.methods.less import less_scores_from_cosines, rank_correlations

        if self.compare is None:
            return
        epochs = [c["epoch"] for c in self.warm.checkpoints]
        lrs = [c["mean_lr"] for c in self.warm.checkpoints]
        exact, _ = less_scores_from_cosines([np.concatenate(self.exact_parts[e]) for e in epochs], lrs, self.labels)
        projected, _ = less_scores_from_cosines(
            [np.concatenate(self.projected_parts[e]) for e in epochs], lrs, self.labels
        )
        top = max(1, len(exact) // 20)  # the published 5% budget
        overlap = len(set(np.argsort(-exact)[:top]) & set(np.argsort(-projected)[:top])) / top
        self.stats["projection_correlation"] = {
            "projection": self.spec.compare_projection,
            "dim": self.compare.dim,
            "samples": len(exact),
            **rank_correlations(projected, exact),
            "top_5pct_overlap": overlap,
        }


GRAD_FEATURES = register_kind(
    StageKind(
        kind="grad_features",
        role="stage",
        one_row_per_sample=False,
        shardable=True,
        spec=GradFeaturesSpec,
        run=run_grad_features,
        version="1",
        summary="LESS gradient features: Adam-preconditioned LoRA gradients per warm-up checkpoint, projected or "
        "scored exactly against the targets.",
        table="grad_features",
        schema_file="schema/stages/grad_features.sql",
        rows_schema=FEATURES_SCHEMA,
        column_lineage={"checkpoint": ("messages",), "features": ("messages",), "n_response_tokens": ("messages",)},
        tags=("python", "torch", "peft"),
    )
)
