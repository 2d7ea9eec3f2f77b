"""Selection `influence_distillation` (Nikdan et al. 2025): optimal sample weights for a target,
from exact gradients of a few landmark samples propagated to the pool along JVP embeddings.

1. Landmarks: L pool samples (random, or k-center greedy on the JVP embeddings).
2. At one warm-up checkpoint, landmarks get projected LoRA update directions (Adam-
   preconditioned with that checkpoint's optimizer state, or plain gradients for GD) and
   every target validation sample a plain projected gradient (same projection).
3. A_L = G_L G_Tᵀ (landmark x target sample inner products) is propagated to every pool
   sample by RBF kernel ridge regression on the JVP embeddings (landmarks keep exact rows).
4. Per target subtask, weights w solve the first- or second-order problem of
   methods/influence_distillation.py with λ set so the budget gets non-zero weights.
5. Subtasks take turns picking their highest-weighted unselected sample (round robin).
The selection's `score` is the picking subtask's weight (exported with `curation export`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from curation_assets.methods.influence_distillation import (
    KernelRidge,
    WeightProblem,
    rank_by_weight,
    round_robin,
    weights_for_budget,
)
from curation_assets.methods.kcenter import k_center_greedy
from curation_assets.models.warmup_checkpoints import ProjectionKind, make_projector
from curation_assets.stages.budget_spec import BudgetedSelectionSpec
from curation_assets.stages.context import StageContext, StageOutput
from curation_assets.stages.grad_features import WarmupModel
from curation_assets.stages.less_selection import TargetSpec, read_target
from curation_assets.stages.registry import StageKind, register_kind
from curation_assets.store.sql_files import execute_sql_file, read_sql

SCORES_SCHEMA = pa.schema([("sample_id", pa.string()), ("subtask", pa.string()), ("influence", pa.float64()),
                           ("weight", pa.float64()), ("landmark", pa.bool_())])


class InfluenceDistillationSpec(BudgetedSelectionSpec):
    """Influence Distillation: landmark gradients + JVP-embedding KRR -> optimal weights per target."""

    kind: Literal["influence_distillation"]
    jvp: str = Field(description="The `jvp_embeddings` stage.")
    warmup: str = Field(description="The `lora_warmup` stage: model, LoRA adapter and optimizer state.")
    checkpoint: int | None = Field(None, description="Warm-up epoch whose checkpoint is used (default: the last).")
    targets: list[TargetSpec] = Field(min_length=1, description="Target tasks (validation sets).")
    landmarks: int = Field(4096, gt=0, description="Samples with exact gradients (published: 4096; capped at the pool).")
    landmark_selection: Literal["random", "kcenter"] = Field("random", description=(
        "random (published) or k-center greedy on the JVP embeddings."))
    optimizer: Literal["adam", "sgd"] = Field("adam", description=(
        "adam: landmark update directions are Adam-preconditioned with the checkpoint's moments; sgd: plain "
        "gradients."))
    order: Literal["first", "second"] = Field("first", description=(
        "first: weights from p = G_S g_T (the released code's variant); second: adds the (η/2)·wᵀQw term "
        "with the target Hessian approximated by the target gradients' empirical Fisher."))
    learning_rate: float = Field(2e-5, gt=0, description="η of the second-order term (the fine-tune's rate).")
    projection: ProjectionKind = Field("hadamard", description=(
        "Gradient projection: hadamard (randomised Hadamard, as published), kronecker or dense."))
    dim: int = Field(8192, gt=0, description="Projected gradient dimensions.")
    ridge: float = Field(1e-2, gt=0, description="KRR ridge as a multiple of the kernel's mean diagonal "
                                                 "(published: 1e-2).")
    seed: int = Field(0, description="Seed of landmarks, projection and the median-distance sample.")
    batch_size: int = Field(8, gt=0, description="Samples per backward pass (halved on out-of-memory).")

    def references(self) -> dict[str, str]:
        return {**super().references(), "jvp": self.jvp, "warmup": self.warmup}

    def upstream_stages(self) -> list[str]:
        return [self.warmup]

    def hashed_config(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"name", "description", "batch_size"})

    def check_references(self, stage_kinds: Any, selection_names: set[str]) -> list[tuple[str, str]]:
        problems = super().check_references(stage_kinds, selection_names)
        for key, name, wanted in (("jvp", self.jvp, "jvp_embeddings"), ("warmup", self.warmup, "lora_warmup")):
            kind = stage_kinds.get(name)
            if (kind is None and name in selection_names) or (kind is not None and kind.kind != wanted):
                problems.append((key, f"{name!r} is not a {wanted} stage"))
        return problems

    def check_files(self, base_dir: Path) -> list[tuple[str, str]]:
        paths = [base_dir / Path(t.path).expanduser() for t in self.targets if t.path]
        return [("targets", f"target file not found: {path}") for path in paths if not path.exists()]

    def with_base_dir(self, base_dir: Path) -> InfluenceDistillationSpec:
        targets = [t.model_copy(update={"path": str(base_dir / Path(t.path).expanduser())}) if t.path else t
                   for t in self.targets]
        return self.model_copy(update={"targets": targets})


def choose_landmarks(embeddings: np.ndarray, count: int, how: str, seed: int) -> np.ndarray:
    """Sorted indices of `count` landmark rows."""
    n = embeddings.shape[0]
    if count >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if how == "kcenter":
        return np.sort(np.asarray(k_center_greedy(np.asarray(embeddings), count, rng=rng).indices))
    return np.sort(rng.choice(n, count, replace=False))


def sample_messages(ctx: StageContext, sample_ids: list[str]) -> list[Any]:
    """The conversations of `sample_ids`, in that order."""
    with ctx.store.reader() as con:
        table = con.sql(read_sql("reads/sample_messages.sql"), params={"sample_ids": sample_ids}).to_arrow_table()
    by_id = dict(zip(table.column("sample_id").to_pylist(), table.column("messages").to_pylist()))
    return [by_id[sid] for sid in sample_ids]


def run_influence_distillation(spec: InfluenceDistillationSpec, ctx: StageContext) -> StageOutput:
    ids, embeddings = ctx.stage_matrix(spec.jvp, "embedding")
    n = len(ids)
    k = min(spec.budget_for(n), n)
    landmark_rows = choose_landmarks(embeddings, spec.landmarks, spec.landmark_selection, spec.seed)

    with tempfile.TemporaryDirectory(dir=ctx.staging_dir) as staging:
        targets = pa.concat_tables([read_target(t, Path(staging) / t.name) for t in spec.targets])
    validation = targets.filter(pc.equal(targets.column("split"), "validation"))
    subtask_of = [f"{t}:{s}" for t, s in zip(validation.column("target").to_pylist(),
                                             validation.column("subtask").to_pylist())]

    warm = WarmupModel(ctx, spec.warmup)
    epochs = [record["epoch"] for record in warm.checkpoints]
    epoch = epochs[-1] if spec.checkpoint is None else spec.checkpoint
    if epoch not in epochs:
        raise ValueError(f"{spec.name}: warm-up {spec.warmup!r} has no checkpoint {epoch} (has {epochs})")
    moments = warm.use(epoch)
    projector = make_projector(warm.model, spec.projection, spec.dim, spec.seed)
    stats: dict[str, Any] = {"pool": n, "budget": k, "landmarks": int(landmark_rows.size), "checkpoint": epoch,
                             "targets": [t.name for t in spec.targets], "validation_samples": validation.num_rows,
                             "heldout_samples": targets.num_rows - validation.num_rows, "order": spec.order,
                             "optimizer": spec.optimizer}
    landmark_ids = [ids[i] for i in landmark_rows]
    landmark_grads = np.stack(warm.features(warm.encode(sample_messages(ctx, landmark_ids)), projector,
                                            moments if spec.optimizer == "adam" else None, spec.batch_size, stats))
    target_grads = np.stack(warm.features(warm.encode(validation.column("messages").to_pylist()), projector, None,
                                          spec.batch_size, stats))
    exact = landmark_grads.astype(np.float64) @ target_grads.astype(np.float64).T  # (L, |T|)
    krr = KernelRidge.fit(embeddings[landmark_rows], exact, ridge_scale=spec.ridge, seed=spec.seed)
    inner = krr.predict(embeddings)  # (n, |T|)
    inner[landmark_rows] = exact
    stats.update({"kernel_sigma": krr.sigma, "kernel_ridge": krr.ridge})

    names = sorted(set(subtask_of))
    rankings, weights, influences = [], [], []
    for name in names:
        columns = np.array([s == name for s in subtask_of])
        a = inner[:, columns]
        p = a.mean(axis=1)
        problem = WeightProblem(p, a if spec.order == "second" else None,
                                spec.learning_rate if spec.order == "second" else 0.0)
        solved = weights_for_budget(problem, k)
        rankings.append(rank_by_weight(solved.weights, p))
        weights.append(solved.weights)
        influences.append(p)
        stats.setdefault("subtasks", {})[name] = {"lambda": solved.lam, "nonzero_weights": solved.nonzero}
    chosen, picked_by = round_robin(rankings, k)
    chosen_weights = [float(weights[t][i]) for i, t in zip(chosen, picked_by)]
    members = ctx.write_members([ids[i] for i in chosen], chosen_weights)
    details = ctx.write_details({"sample_id": [ids[i] for i in chosen],
                                 "role": [f"picked by {names[t]}" for t in picked_by],
                                 "value": [float(influences[t][i]) for i, t in zip(chosen, picked_by)]})
    is_landmark = np.zeros(n, dtype=bool)
    is_landmark[landmark_rows] = True
    scores_file = ctx.staging_dir / f"{ctx.stage}.influence.parquet"
    with pq.ParquetWriter(scores_file, SCORES_SCHEMA) as writer:
        for t, name in enumerate(names):
            writer.write_table(pa.table({"sample_id": ids, "subtask": [name] * n, "influence": influences[t],
                                         "weight": weights[t], "landmark": is_landmark}, schema=SCORES_SCHEMA))
    target_file = ctx.staging_dir / f"{ctx.stage}.targets.parquet"
    pq.write_table(targets, target_file)
    stats["selected"] = int(chosen.size)
    return StageOutput(members, rows_in=n, stats=stats, metadata=dict(stats), details_file=details,
                       extra={"targets_file": str(target_file), "scores_file": str(scores_file)})


def write_influence(con: Any, stage: str, config_hash: str, output: StageOutput) -> None:
    execute_sql_file(con, "writes/influence_replace.sql", {
        "selection": stage, "targets_file": output.extra["targets_file"],
        "scores_file": output.extra["scores_file"]})


INFLUENCE_DISTILLATION = register_kind(StageKind(
    kind="influence_distillation", role="selection", spec=InfluenceDistillationSpec,
    run=run_influence_distillation, version="1",
    summary="Influence Distillation: landmark gradients propagated by KRR on JVP embeddings, optimal weights.",
    schema_file="schema/stages/influence_distillation.sql", tags=("python", "torch", "numpy"),
    write_extra=write_influence,
))
