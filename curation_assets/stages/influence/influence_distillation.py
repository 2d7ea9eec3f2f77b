"""Selection `influence_distillation` (Nikdan et al. 2025): optimal sample weights for a target,
from exact gradients of a few landmark samples propagated to the pool along JVP embeddings.

1. Landmarks: L pool samples (random, or k-center greedy on the JVP embeddings).
2. Update directions, as the released `pick_first_order` by default: gradients of the model's
   own weights (`params`, default every `down_proj`; AdamW-warmed by this stage on the
   `lora_warmup` draw, models/weight_warmup.py) or of the warm-up's LoRA adapters; landmarks
   get a ⊙ g with the released Adam coefficient (or the LESS direction, or plain gradients),
   targets plain gradients; both unit-normalised (`normalize`) and projected.
3. A_L = G_L G_Tᵀ (landmark x target sample inner products) is propagated to every pool
   sample by RBF kernel ridge regression on the JVP embeddings (the damped output is used for
   landmarks too unless `exact_landmarks`).
4. round_robin: targets (released): the target samples, in a new shuffled order each round,
   take turns picking their highest-scoring unselected sample; subtasks: per target subtask,
   weights w solve the first- or second-order problem of methods/influence_distillation.py and
   subtasks take turns picking their highest-weighted unselected sample.
The selection's `score` is the picking target sample's score, or the picking subtask's weight.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from curation_assets.arrow_compute import pc
from curation_assets.methods.distinct import distinct_counts, distinct_round_robin, shared_key_count
from curation_assets.methods.influence_distillation import (
    KernelRidge,
    WeightProblem,
    column_rankings,
    rank_by_weight,
    released_adam_coefficient,
    round_robin,
    weights_for_budget,
)
from curation_assets.methods.kcenter import k_center_greedy
from curation_assets.models.chat_format import Turns
from curation_assets.models.warmup_checkpoints import ProjectionKind
from curation_assets.stages.core.budget import BudgetedSelectionSpec
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.conversation_keys import DistinctSpec, conversation_codes
from curation_assets.stages.core.registry import StageKind, register_kind
from curation_assets.stages.core.targets import TargetsInput, TargetSpec, read_target, targets_writer
from curation_assets.store.sql_files import read_sql

SCORES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("subtask", pa.string()),
        ("influence", pa.float64()),
        ("weight", pa.float64()),
        ("landmark", pa.bool_()),
    ]
)


class InfluenceDistillationSpec(BudgetedSelectionSpec, DistinctSpec, TargetsInput):
    """Influence Distillation: landmark gradients + JVP-embedding KRR -> picks per target sample or subtask."""

    kind: Literal["influence_distillation"]
    jvp: str = Field(description="The `jvp_embeddings` stage.")
    warmup: str = Field(
        description=(
            "The `lora_warmup` stage: model, training draw and optimiser settings (and, for `params: lora`, the "
            "adapter and its optimizer state)."
        )
    )
    checkpoint: int | None = Field(None, description="Warm-up epoch whose checkpoint is used (default: the last).")
    targets: list[TargetSpec] = Field(min_length=1, description="Target tasks (validation sets).")
    landmarks: int = Field(
        4096, gt=0, description="Samples with exact gradients (published: 4096; capped at the pool)."
    )
    landmark_selection: Literal["random", "kcenter"] = Field(
        "random", description=("random (published) or k-center greedy on the JVP embeddings.")
    )
    params: Literal["lora"] | list[str] = Field(
        ["down_proj"],
        description=(
            "Whose gradients: a list of module-name parts, meaning every Linear weight of the model whose name contains "
            "one (released `proj_subset`, default down_proj), AdamW-warmed by this stage on the warm-up's draw with its "
            "optimiser settings for `checkpoint` epochs; or `lora`: the warm-up's LoRA adapters at that checkpoint."
        ),
    )
    optimizer: Literal["adam", "sgd"] = Field(
        "adam",
        description=(
            "adam: landmark directions use the AdamW state of `params` (see `adam_direction`); sgd: plain gradients "
            "(the released code called without an optimizer)."
        ),
    )
    adam_direction: Literal["released", "less"] = Field(
        "released",
        description=(
            "released: a ⊙ g with a = (1−β1)/(1−β1^(t+1)) / (√(v/(1−β2^(t+1)))+ε), the coefficient of g in the "
            "next AdamW update (released `_read_optim`); less: LESS's m'/√(v'+ε) (the released LESS code's ε placement) with the momentum and g² folded in."
        ),
    )
    normalize: bool = Field(
        True,
        description=(
            "Unit-normalise landmark directions and target gradients before the inner products (released), so a "
            "sample's gradient norm (largest for short responses: the loss is a mean over response tokens) does not "
            "outweigh its direction; false: raw inner products."
        ),
    )
    round_robin: Literal["targets", "subtasks"] = Field(
        "targets",
        description=(
            "targets (released): every target validation sample scores the pool and the target samples, in a new "
            "shuffled order each round, take turns picking their best unselected sample; subtasks: per target "
            "subtask the mean score gives weights (first or second order) and subtasks take turns in name order."
        ),
    )
    exact_landmarks: bool = Field(
        False,
        description=(
            "Overwrite landmark rows with their exact inner products; the released code uses the damped KRR output "
            "for every sample."
        ),
    )
    order: Literal["first", "second"] = Field(
        "first",
        description=(
            "first: weights from p = G_S g_T (the released code's variant); second: adds the (η/2)·wᵀQw term "
            "with the target Hessian approximated by the target gradients' empirical Fisher (needs "
            "round_robin: subtasks)."
        ),
    )
    learning_rate: float = Field(2e-5, gt=0, description="η of the second-order term (the fine-tune's rate).")
    projection: ProjectionKind = Field(
        "hadamard",
        description=("Gradient projection: hadamard (randomised Hadamard, as released), kronecker or dense."),
    )
    dim: int = Field(
        32768,
        gt=0,
        description=("Projected gradient dimensions (released: 32,768; hadamard keeps at most the gradient's length)."),
    )
    ridge: float = Field(
        1e-2, gt=0, description="KRR ridge as a multiple of the kernel's mean diagonal (published: 1e-2)."
    )
    seed: int = Field(
        0, description="Seed of landmarks, projection, the median-distance sample and the round robin's shuffles."
    )
    batch_size: int = Field(8, gt=0, description="Samples per backward pass (halved on out-of-memory).")

    @model_validator(mode="after")
    def _second_order_needs_subtasks(self) -> InfluenceDistillationSpec:
        if self.order == "second" and self.round_robin != "subtasks":
            raise ValueError("order: second solves weights per target subtask: set round_robin: subtasks")
        if isinstance(self.params, list) and not self.params:
            raise ValueError("params: give at least one module name (e.g. [down_proj]) or `lora`")
        return self

    STAGE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"jvp": ("jvp_embeddings",), "warmup": ("lora_warmup",)}
    UPSTREAM_KEYS: ClassVar[tuple[str, ...]] = ("warmup",)

    UNHASHED: ClassVar[frozenset[str]] = frozenset({"batch_size"})  # does not change results


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


@dataclass
class GradientSource:
    """The warmed-up model whose gradients are taken, and how landmark gradients become directions."""

    model: Any
    tokenizer: Any
    capture: Any
    projector: Any
    max_length: int
    model_name: str
    device: str
    landmark_transform: Callable[[str, Any], Any] | None
    turns: Turns = "all"

    def encode(self, conversations: Sequence[Any]) -> list[Any]:
        from curation_assets.models.chat_format import encode_conversation

        return [
            encode_conversation(self.tokenizer, c, self.max_length, self.model_name, turns=self.turns)
            for c in conversations
        ]

    def directions(
        self, conversations: Sequence[Any], landmark: bool, normalize: bool, batch_size: int, stats: dict
    ) -> np.ndarray:
        """(len(conversations), dim) projected directions (landmark: Adam-weighted), one batch at a time."""
        from curation_assets.models.chat_format import collate, longest_first
        from curation_assets.models.influence_gradients import projected_directions
        from curation_assets.stages.core.causal_lm import run_batches_with_oom_backoff

        encoded = self.encode(conversations)
        out = np.zeros((len(encoded), self.projector.dim), dtype=np.float64)
        transform = self.landmark_transform if landmark else None

        def run(batch: list[int]) -> None:
            tensors = collate([encoded[i] for i in batch], self.tokenizer.pad_token_id, self.device)
            rows = projected_directions(self.model, tensors, self.capture, self.projector, transform, normalize)
            out[batch] = rows.detach().double().cpu().numpy()

        run_batches_with_oom_backoff(run, longest_first(encoded), batch_size, stats)
        return out


def adam_transform(adam: Any, direction: str, device: str) -> Callable[[str, Any], Any]:
    """Per-layer landmark direction from an AdamState: the released coefficient a ⊙ g, or LESS's Γ."""
    from curation_assets.methods.less import adam_precondition

    if direction == "released":
        coefficient = {
            name: released_adam_coefficient(v.to(device).float(), adam.step, adam.betas, adam.eps)
            for name, (_, v) in adam.moments.items()
        }
        return lambda name, grads: grads * coefficient[name]
    moments = {name: (m.to(device).float(), v.to(device).float()) for name, (m, v) in adam.moments.items()}
    return lambda name, grads: adam_precondition(grads, *moments[name], adam.betas, adam.eps)


def lora_gradient_source(spec: InfluenceDistillationSpec, ctx: StageContext, epoch: int) -> GradientSource:
    """The LESS warm-up model at checkpoint `epoch`; landmark directions from its AdamW state."""
    import torch

    from curation_assets.models.influence_gradients import layer_projector
    from curation_assets.models.weight_warmup import AdamState
    from curation_assets.stages.core.warmup import WarmupModel

    warm = WarmupModel(ctx, spec.warmup)
    moments = warm.use(epoch)
    folder = Path(next(c for c in warm.checkpoints if c["epoch"] == epoch)["path"])
    optimizer_state = torch.load(folder / "optimizer.pt", map_location="cpu")
    group = optimizer_state["param_groups"][0]
    step = int(next(iter(optimizer_state["state"].values()))["step"])
    adam = AdamState(moments, step, tuple(group["betas"]), float(group["eps"]))
    projector = layer_projector(
        [(m.weight.shape[0], m.weight.shape[1]) for m in warm.capture.layers.values()],
        spec.projection,
        spec.dim,
        spec.seed,
    )
    transform = adam_transform(adam, spec.adam_direction, warm.device.name) if spec.optimizer == "adam" else None
    return GradientSource(
        warm.model,
        warm.tokenizer,
        warm.capture,
        projector,
        warm.spec.max_length,
        warm.spec.model,
        warm.device.name,
        transform,
        warm.spec.turns,
    )


def weight_gradient_source(
    spec: InfluenceDistillationSpec, ctx: StageContext, epoch: int, stats: dict[str, Any]
) -> GradientSource:
    """The base model with its `params` weights AdamW-warmed on the warm-up's draw for `epoch` epochs
    (kept in the artifacts folder, reused by a later run of the same config)."""
    from curation_assets.models.causal_lm import fresh_causal_lm
    from curation_assets.models.chat_format import encode_conversation
    from curation_assets.models.device import compute_device
    from curation_assets.models.influence_gradients import WeightGradientCapture, layer_projector
    from curation_assets.models.weight_warmup import (
        linear_layers,
        load_weight_warmup,
        save_weight_warmup,
        train_only,
        warm_up_weights,
    )

    warm_spec = ctx.stage_specs[spec.warmup]
    device = compute_device()
    model, tokenizer = fresh_causal_lm(warm_spec.model, warm_spec.chat_template)
    layers = linear_layers(model, spec.params)
    path = ctx.artifacts_dir / f"weight-warmup-epoch-{epoch}.pt"
    if path.exists():
        adam = load_weight_warmup(path, layers)
        stats["weight_warmup"] = {"reused": str(path)}
    else:
        with ctx.store.reader() as con:
            rows = con.execute(
                read_sql("reads/warmup_training_samples.sql"),
                {"stage": spec.warmup, "config_hash": ctx.stage_hashes[spec.warmup]},
            ).fetchall()
        if not rows:
            raise ValueError(
                f"{spec.name}: warm-up {spec.warmup!r} has no training samples for its current config: "
                "materialise it first"
            )
        samples = [
            encode_conversation(tokenizer, messages, warm_spec.max_length, warm_spec.model, turns=warm_spec.turns)
            for _, messages in rows
        ]
        adam, info = warm_up_weights(
            model,
            layers,
            samples,
            warm_spec.lora,
            epochs=epoch,
            pad_token_id=tokenizer.pad_token_id,
            seed=warm_spec.seed,
            device=device.name,
        )
        stats["weight_warmup"] = {
            **info,
            "samples": len(samples),
            "path": str(path),
            "sha256": save_weight_warmup(path, layers, adam),
        }
    train_only(model, layers)  # the gradient hooks need these weights to require grad
    model.to(device.name).eval()
    capture = WeightGradientCapture(model, spec.params)
    projector = layer_projector(
        [(m.weight.shape[0], m.weight.shape[1]) for m in capture.layers.values()], spec.projection, spec.dim, spec.seed
    )
    transform = adam_transform(adam, spec.adam_direction, device.name) if spec.optimizer == "adam" else None
    stats["gradient_layers"] = len(capture.layers)
    return GradientSource(
        model,
        tokenizer,
        capture,
        projector,
        warm_spec.max_length,
        warm_spec.model,
        device.name,
        transform,
        warm_spec.turns,
    )


def run_influence_distillation(spec: InfluenceDistillationSpec, ctx: StageContext) -> StageOutput:
    from curation_assets.stages.core.warmup import checkpoint_records

    ids, embeddings = ctx.stage_matrix(spec.jvp, "embedding")
    n = len(ids)
    k = min(spec.budget_for(n), n)
    landmark_rows = choose_landmarks(embeddings, spec.landmarks, spec.landmark_selection, spec.seed)

    with tempfile.TemporaryDirectory(dir=ctx.staging_dir) as staging:
        targets = pa.concat_tables([read_target(t, Path(staging) / t.name) for t in spec.targets])
    # target samples in (target, sample_id) order: the round robin's shuffles index this order
    validation = targets.filter(pc.equal(targets.column("split"), "validation")).sort_by(
        [("target", "ascending"), ("sample_id", "ascending")]
    )
    subtask_of = [
        f"{t}:{s}" for t, s in zip(validation.column("target").to_pylist(), validation.column("subtask").to_pylist())
    ]

    if getattr(ctx.stage_specs.get(spec.warmup), "kind", None) != "lora_warmup":
        raise ValueError(f"{spec.name}: {spec.warmup!r} is not a lora_warmup stage of this pipeline")
    epochs = [record["epoch"] for record in checkpoint_records(ctx, spec.warmup, ctx.stage_hashes[spec.warmup])]
    if not epochs:
        raise ValueError(
            f"{spec.name}: warm-up {spec.warmup!r} has no checkpoints for its current config: materialise it first"
        )
    epoch = epochs[-1] if spec.checkpoint is None else spec.checkpoint
    if epoch not in epochs:
        raise ValueError(f"{spec.name}: warm-up {spec.warmup!r} has no checkpoint {epoch} (has {epochs})")
    stats: dict[str, Any] = {
        "pool": n,
        "budget": k,
        "landmarks": int(landmark_rows.size),
        "checkpoint": epoch,
        "targets": [t.name for t in spec.targets],
        "validation_samples": validation.num_rows,
        "heldout_samples": targets.num_rows - validation.num_rows,
        "order": spec.order,
        "optimizer": spec.optimizer,
        "params": spec.params,
        "normalize": spec.normalize,
        "round_robin": spec.round_robin,
        "adam_direction": spec.adam_direction,
    }
    source = (
        lora_gradient_source(spec, ctx, epoch)
        if spec.params == "lora"
        else weight_gradient_source(spec, ctx, epoch, stats)
    )
    stats["dim"] = source.projector.dim
    landmark_ids = [ids[i] for i in landmark_rows]
    landmark_dirs = source.directions(sample_messages(ctx, landmark_ids), True, spec.normalize, spec.batch_size, stats)
    target_dirs = source.directions(
        validation.column("messages").to_pylist(), False, spec.normalize, spec.batch_size, stats
    )
    exact = landmark_dirs @ target_dirs.T  # (L, |T|)
    # one multi-column solve = the released KRR run separately per target sample (same kernel)
    krr = KernelRidge.fit(embeddings[landmark_rows], exact, ridge_scale=spec.ridge, seed=spec.seed)
    inner = krr.predict(embeddings)  # (n, |T|)
    if spec.exact_landmarks:
        inner[landmark_rows] = exact
    stats.update({"kernel_sigma": krr.sigma, "kernel_ridge": krr.ridge})

    names = sorted(set(subtask_of))
    weights, influences, subtask_rankings = [], [], []
    for name in names:
        columns = np.array([s == name for s in subtask_of])
        a = inner[:, columns]
        p = a.mean(axis=1)
        problem = WeightProblem(
            p, a if spec.order == "second" else None, spec.learning_rate if spec.order == "second" else 0.0
        )
        solved = weights_for_budget(problem, k)
        subtask_rankings.append(rank_by_weight(solved.weights, p))
        weights.append(solved.weights)
        influences.append(p)
        stats.setdefault("subtasks", {})[name] = {"lambda": solved.lam, "nonzero_weights": solved.nonzero}
    # distinct (issue #19): the round robin also skips samples sharing a conversation or first
    # user turn with a chosen one; its rankings then reach past the skipped ones
    codes = conversation_codes(ctx.store, ids) if spec.distinct else None
    depth = k if codes is None else min(n, k + shared_key_count(codes))
    if spec.round_robin == "subtasks":
        chosen, picked_by = (
            round_robin(subtask_rankings, k) if codes is None else distinct_round_robin(subtask_rankings, k, codes)
        )
        scores = [float(weights[t][i]) for i, t in zip(chosen, picked_by)]
        roles = [f"picked by {names[t]}" for t in picked_by]
        values = [float(influences[t][i]) for i, t in zip(chosen, picked_by)]
    else:
        rankings, rng = column_rankings(inner, depth), np.random.default_rng(spec.seed)
        chosen, picked_by = (
            round_robin(rankings, k, rng) if codes is None else distinct_round_robin(rankings, k, codes, rng)
        )
        target_ids = validation.column("sample_id").to_pylist()
        scores = values = [float(inner[i, t]) for i, t in zip(chosen, picked_by)]
        roles = [f"picked by {subtask_of[t]} sample {target_ids[t]}" for t in picked_by]
    members = ctx.write_members([ids[i] for i in chosen], scores)
    details = ctx.write_details({"sample_id": [ids[i] for i in chosen], "role": roles, "value": values})
    is_landmark = np.zeros(n, dtype=bool)
    is_landmark[landmark_rows] = True
    scores_file = ctx.staging_dir / f"{ctx.stage}.influence.parquet"
    with pq.ParquetWriter(scores_file, SCORES_SCHEMA) as writer:
        for t, name in enumerate(names):
            writer.write_table(
                pa.table(
                    {
                        "sample_id": ids,
                        "subtask": [name] * n,
                        "influence": influences[t],
                        "weight": weights[t],
                        "landmark": is_landmark,
                    },
                    schema=SCORES_SCHEMA,
                )
            )
    target_file = ctx.staging_dir / f"{ctx.stage}.targets.parquet"
    pq.write_table(targets, target_file)
    stats["selected"] = int(chosen.size)
    stats["distinct"] = spec.distinct
    if codes is not None:
        stats["distinct_conversations"], stats["distinct_first_turns"] = (
            distinct_counts(codes[chosen]) if chosen.size else (0, 0)
        )
    return StageOutput(
        members,
        rows_in=n,
        stats=stats,
        metadata=dict(stats),
        details_file=details,
        extra={"targets_file": str(target_file), "scores_file": str(scores_file)},
    )


INFLUENCE_DISTILLATION = register_kind(
    StageKind(
        kind="influence_distillation",
        role="selection",
        spec=InfluenceDistillationSpec,
        run=run_influence_distillation,
        version="3",
        summary="Influence Distillation: landmark gradients propagated by KRR on JVP embeddings, round-robin picks.",
        schema_file="schema/stages/influence_distillation.sql",
        tags=("python", "torch", "numpy"),
        write_extra=targets_writer("writes/influence_replace.sql"),
    )
)
