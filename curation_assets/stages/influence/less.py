"""Selection `less` (LESS, Xia et al. 2024): target-aware selection from gradient features.

Each target (a file or packaged dataset, read like a source) is split with a seed into a
small validation part, used here, and a held-out part kept in `target_samples` for
evaluation; a `subtask_field` splits it into subtasks. Target validation samples get plain
(not preconditioned) projected gradients at every warm-up checkpoint, with the same
projection as the training features; with a `projection: none` stage the exact cosines it
stored (same targets) are read instead. Score = Σ_ckpt η̄ · cos, mean over each subtask's
validation samples, max over subtasks (of every target); the top budget is selected, by
default at most one sample per source conversation and first user turn (`distinct`).
Per-sample scores per target/subtask go to `less_scores`; the targets to `target_samples`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from curation_assets.models.warmup_checkpoints import make_projector
from curation_assets.stages.core.budget import BudgetedSelectionSpec
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.conversation_keys import DistinctSpec, choose_top
from curation_assets.stages.core.registry import StageKind, register_kind
from curation_assets.stages.core.targets import TargetsInput, TargetSpec, targets_writer, validation_targets
from curation_assets.stages.core.warmup import WarmupModel, checkpoint_records


class LessSpec(BudgetedSelectionSpec, DistinctSpec, TargetsInput):
    """Top samples by LESS influence on the targets (published budget: 5%)."""

    kind: Literal["less"]
    features: str = Field(description="The `grad_features` stage.")
    targets: list[TargetSpec] = Field(min_length=1, description="Target tasks (validation sets).")

    STAGE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"features": ("grad_features",)}


def check_learning_rates(warmup: str, checkpoints: list[dict[str, Any]]) -> None:
    """LESS weighs each checkpoint by its epoch's mean learning rate; all zero means no signal at all."""
    lrs = [float(c["mean_lr"]) for c in checkpoints]
    if sum(lrs) <= 0:
        raise ValueError(
            f"warm-up {warmup!r}: the mean learning rate of every checkpoint is 0 ({lrs}), so LESS has no "
            "gradient to weigh: its epochs ran too few optimizer steps for the linear warm-up/decay schedule "
            "(a tiny pool or train_fraction); give the warm-up more samples (`train_fraction`, a larger pool) "
            "or more `epochs`"
        )


def run_less(spec: LessSpec, ctx: StageContext) -> StageOutput:
    from curation_assets.methods.less import less_scores, less_scores_from_cosines

    features_spec: Any = ctx.stage_specs.get(spec.features)  # a grad_features spec
    if getattr(features_spec, "kind", None) != "grad_features":
        raise ValueError(f"{spec.features!r} is not a grad_features stage of this pipeline")
    exact = features_spec.projection == "none"
    if exact and [t.model_dump() for t in features_spec.targets] != [t.model_dump() for t in spec.targets]:
        raise ValueError(
            f"{ctx.stage}: `targets` differ from those of grad_features stage {spec.features!r}, whose "
            "projection: none stores exact cosines with its own targets; give both the same targets"
        )
    targets, validation, labels = validation_targets(ctx, spec.targets)
    stats: dict[str, Any] = {
        "targets": [t.name for t in spec.targets],
        "validation_samples": validation.num_rows,
        "heldout_samples": targets.num_rows - validation.num_rows,
        "projection": features_spec.projection,
    }
    if exact:  # the stage stored each sample's exact cosine with every validation sample
        checkpoints = checkpoint_records(ctx, features_spec.warmup, ctx.stage_hashes[features_spec.warmup])
        check_learning_rates(features_spec.warmup, checkpoints)
        ids, cosines = stored_matrices(ctx, spec.features, checkpoints)
        if cosines[0].shape[1] != validation.num_rows:
            raise ValueError(
                f"{spec.features}: {cosines[0].shape[1]} cosines per sample for "
                f"{validation.num_rows} validation samples; re-materialise it"
            )
        scores, per_subtask = less_scores_from_cosines(cosines, [c["mean_lr"] for c in checkpoints], labels)
    else:
        warm = WarmupModel(ctx, features_spec.warmup)
        checkpoints = warm.checkpoints
        check_learning_rates(features_spec.warmup, checkpoints)
        projector = make_projector(warm.model, features_spec.projection, features_spec.dim, features_spec.seed)
        encoded = warm.encode(validation.column("messages").to_pylist())
        val = []
        for record in checkpoints:
            warm.use(record["epoch"])
            val.append(np.stack(warm.features(encoded, projector, None, features_spec.batch_size, stats)))
        ids, train = stored_matrices(ctx, spec.features, checkpoints)
        scores, per_subtask = less_scores(train, val, [c["mean_lr"] for c in checkpoints], labels)
    stats["checkpoints"] = len(checkpoints)
    k = spec.budget_for(len(ids))
    chosen, distinct = choose_top(ctx.store, ids, scores, min(k, len(ids)), distinct=spec.distinct)
    members = ctx.write_members([ids[i] for i in chosen], scores[chosen].tolist())
    names = sorted(per_subtask)
    scores_file = ctx.staging_dir / f"{ctx.stage}.less_scores.parquet"
    pq.write_table(
        pa.table(
            {
                "sample_id": [sid for sid in ids for _ in names],
                "subtask": [name for _ in ids for name in names],
                "score": np.stack([per_subtask[name] for name in names], axis=1).reshape(-1),
            }
        ),
        scores_file,
    )
    target_file = ctx.staging_dir / f"{ctx.stage}.targets.parquet"
    pq.write_table(targets, target_file)
    stats.update({"pool": len(ids), "budget": k, "selected": int(len(chosen)), "subtasks": names, **distinct})
    return StageOutput(
        members,
        rows_in=len(ids),
        stats=stats,
        metadata=dict(stats),
        extra={"targets_file": str(target_file), "scores_file": str(scores_file)},
    )


def stored_matrices(
    ctx: StageContext, stage: str, checkpoints: list[dict[str, Any]]
) -> tuple[list[str], list[np.ndarray]]:
    """(sample ids, one `features` matrix per checkpoint) of a grad_features stage, rows aligned."""
    ids: list[str] | None = None
    matrices = []
    for record in checkpoints:
        checkpoint_ids, matrix = ctx.stage_matrix(stage, "features", checkpoint=record["epoch"])
        if ids is not None and checkpoint_ids != ids:
            raise ValueError(f"{stage}: checkpoints cover different samples; re-materialise it")
        ids = checkpoint_ids
        matrices.append(matrix)
    assert ids is not None
    return ids, matrices


LESS = register_kind(
    StageKind(
        kind="less",
        role="selection",
        spec=LessSpec,
        run=run_less,
        version="2",
        summary="LESS: top samples by checkpoint-weighted gradient cosine with target validation sets.",
        schema_file="schema/stages/less.sql",
        tags=("python", "torch", "numpy"),
        write_extra=targets_writer("writes/less_replace.sql"),
    )
)
