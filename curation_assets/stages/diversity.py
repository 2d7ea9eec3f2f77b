"""Selections over an `embedding` (or `lm_embedding`) stage: k-center greedy, K-Means
coreset, DEFT-UCS, LIFT variance and near-duplicate removal. Each reads the vectors, calls a
method from `curation_assets.methods`, and stages members (rank, score) plus per-sample details."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from curation_assets.methods.coresets import deft_ucs, kmeans_kcenter_coreset
from curation_assets.methods.diversity_filter import similarity_filter
from curation_assets.methods.kcenter import k_center_greedy
from curation_assets.methods.lift_variance import lift_variance_selection
from curation_assets.stages.budget_spec import BudgetedSelectionSpec
from curation_assets.stages.context import StageContext, StageOutput
from curation_assets.stages.registry import StageKind, StageSpec, register_kind


class EmbeddingInput(StageSpec):
    # stage kinds whose table has an `embedding` vector column this selection can read
    EMBEDDING_KINDS: ClassVar[tuple[str, ...]] = ("embedding", "lm_embedding")

    embedding: str = Field(description="Name of the `embedding` (or `lm_embedding`) stage whose vectors are used.")
    seed: int = Field(0, description="Random seed.")

    def references(self) -> dict[str, str]:
        return {**super().references(), "embedding": self.embedding}

    def check_references(self, stage_kinds: Mapping[str, StageKind], selection_names: set[str]
                         ) -> list[tuple[str, str]]:
        problems = super().check_references(stage_kinds, selection_names)
        kind = stage_kinds.get(self.embedding)
        if kind is not None and kind.kind not in self.EMBEDDING_KINDS:
            problems.append(("embedding", f"{self.embedding!r} is a {kind.kind} stage, not an embedding stage "
                                          f"({' or '.join(self.EMBEDDING_KINDS)})"))
        if kind is None and self.embedding in selection_names:
            problems.append(("embedding", f"{self.embedding!r} is a selection, not an embedding stage"))
        return problems


class KCenterSpec(EmbeddingInput, BudgetedSelectionSpec):
    """k-center greedy (Sener & Savarese 2018) on Euclidean distance between embeddings."""

    kind: Literal["kcenter_greedy"]
    seed_selection: str | None = Field(None, description=(
        "A selection whose members start as centres (they count towards the budget)."))

    def references(self) -> dict[str, str]:
        refs = super().references()
        return {**refs, "seed_selection": self.seed_selection} if self.seed_selection else refs

    def check_references(self, stage_kinds: Mapping[str, StageKind], selection_names: set[str]
                         ) -> list[tuple[str, str]]:
        problems = super().check_references(stage_kinds, selection_names)
        if self.seed_selection and self.seed_selection in stage_kinds:
            problems.append(("seed_selection", f"{self.seed_selection!r} is a stage, not a selection"))
        return problems


def run_kcenter(spec: KCenterSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    k = spec.budget_for(len(sample_ids))
    seeds: list[int] = []
    if spec.seed_selection:
        position = {sid: i for i, sid in enumerate(sample_ids)}
        members = ctx.selection_members(spec.seed_selection).column("sample_id").to_pylist()
        seeds = [position[sid] for sid in members if sid in position]
    result = k_center_greedy(x, k, seed_idx=seeds, rng=np.random.default_rng(spec.seed))
    chosen = [sample_ids[i] for i in result.indices]
    radii = np.where(np.isinf(result.radii), np.nan, result.radii)
    stats = {"pool": len(sample_ids), "budget": k, "seeds": len(seeds), "coverage_radius": result.coverage_radius}
    details = ctx.write_details({"sample_id": chosen,
                                 "role": ["seed" if i < len(seeds) else "kcenter" for i in range(len(chosen))],
                                 "value": radii.tolist()})
    return StageOutput(ctx.write_members(chosen, radii.tolist()), rows_in=len(sample_ids), stats=stats,
                       metadata=stats, details_file=details)


class KMeansCoresetSpec(EmbeddingInput, BudgetedSelectionSpec):
    """K-Means into K clusters, then k-center greedy per cluster with a proportional budget."""

    kind: Literal["kmeans_coreset"]
    n_clusters: int = Field(10, gt=0, description="K for faiss K-Means (capped at the pool size).")


def run_kmeans_coreset(spec: KMeansCoresetSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    k = spec.budget_for(len(sample_ids))
    result = kmeans_kcenter_coreset(np.asarray(x), k, spec.n_clusters, seed=spec.seed)
    chosen = [sample_ids[i] for i in result.indices]
    scores = np.where(np.isinf(result.distance), np.nan, result.distance)
    cluster_sizes = np.bincount(result.labels, minlength=result.budgets.size)
    stats = {"pool": len(sample_ids), "budget": k, "clusters": int(result.budgets.size),
             "per_cluster": {str(c): {"size": int(cluster_sizes[c]), "selected": int(result.budgets[c])}
                             for c in range(result.budgets.size)}}
    details = ctx.write_details({"sample_id": chosen, "role": result.role.tolist(),
                                 "cluster": result.labels[result.indices].tolist(), "value": scores.tolist()})
    return StageOutput(ctx.write_members(chosen, scores.tolist()), rows_in=len(sample_ids), stats=stats,
                       metadata=stats, details_file=details)


class DeftUcsSpec(EmbeddingInput, BudgetedSelectionSpec):
    """DEFT-UCS: per K-Means cluster, the points closest to the centroid ("easy") and the farthest ("hard")."""

    kind: Literal["deft_ucs"]
    n_clusters: int = Field(7, gt=0, description="K-Means clusters (paper: 7).")
    sampling: Literal["per_cluster", "proportional"] = Field("per_cluster", description=(
        "per_cluster (the paper): a fixed amount A per cluster, alpha·A easy + beta·A hard; proportional "
        "(ours): cluster budget k·|c|/N, alpha of it easy, the rest hard."))
    per_cluster: int | None = Field(None, gt=0, description=(
        "A, rows per cluster (per_cluster sampling); instead of `budget`/`fraction`, which otherwise set the "
        "largest A whose full clusters fit them."))
    alpha: float = Field(0.5, ge=0, le=1, description="Easy share: of A (per_cluster) or of the cluster budget.")
    beta: float | None = Field(None, ge=0, le=1, description=(
        "Hard share of A, independent of alpha (per_cluster); default 1 - alpha; proportional: 1 - alpha."))
    base_size: int = Field(0, ge=0, description="D_base: rows drawn stratified per cluster first; part of the budget.")

    @model_validator(mode="after")
    def _one_budget(self) -> DeftUcsSpec:  # replaces BudgetedSelectionSpec's: `per_cluster` is a third way
        given = [key for key in ("budget", "fraction", "per_cluster") if getattr(self, key) is not None]
        if self.sampling == "proportional":
            if self.per_cluster is not None or len(given) != 1:
                raise ValueError("proportional sampling takes exactly one of `budget` or `fraction`")
            if self.beta is not None and abs(self.alpha + self.beta - 1) > 1e-9:
                raise ValueError("proportional sampling couples beta = 1 - alpha: leave `beta` unset")
        elif len(given) != 1:
            raise ValueError("give exactly one of `budget`, `fraction` or `per_cluster` (A)")
        return self


def run_deft_ucs(spec: DeftUcsSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    k = spec.budget_for(len(sample_ids)) if spec.per_cluster is None else None
    if k is not None and spec.base_size > k:
        raise ValueError(f"{spec.name}: base_size {spec.base_size} exceeds the budget {k}")
    if spec.base_size > len(sample_ids):
        raise ValueError(f"{spec.name}: base_size {spec.base_size} exceeds the pool of {len(sample_ids)}")
    result = deft_ucs(np.asarray(x), k, n_clusters=spec.n_clusters, alpha=spec.alpha, beta=spec.beta,
                      per_cluster=spec.per_cluster, sampling=spec.sampling, base_size=spec.base_size,
                      seed=spec.seed)
    chosen = [sample_ids[i] for i in result.indices]
    roles = result.role.tolist()
    stats = {"pool": len(sample_ids), "budget": k, "selected": len(chosen), "sampling": spec.sampling,
             "per_cluster_amount": result.amount, "alpha": spec.alpha,
             "beta": 1 - spec.alpha if spec.beta is None else spec.beta, "clusters": int(result.budgets.size),
             "easy": roles.count("easy"), "hard": roles.count("hard"), "base": roles.count("base"),
             "per_cluster_budget": {str(c): int(b) for c, b in enumerate(result.budgets)}}
    details = ctx.write_details({"sample_id": chosen, "role": roles,
                                 "cluster": result.labels[result.indices].tolist(),
                                 "value": result.distance.tolist()})
    return StageOutput(ctx.write_members(chosen, result.distance.tolist()), rows_in=len(sample_ids), stats=stats,
                       metadata=stats, details_file=details)


class LiftVarianceSpec(EmbeddingInput):
    """LIFT phase 2: StandardScaler, PCA keeping `variance_kept`, keep rows above the percentile of row variance."""

    kind: Literal["lift_variance"]
    variance_kept: float = Field(0.95, gt=0, lt=1, description="Share of variance the PCA keeps.")
    percentile: float = Field(80.0, ge=0, lt=100, description="Keep rows whose variance is above this percentile.")


def run_lift_variance(spec: LiftVarianceSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    result = lift_variance_selection(np.asarray(x), variance_kept=spec.variance_kept,
                                     percentile=spec.percentile, seed=spec.seed)
    chosen = [sample_ids[i] for i in result.indices]
    stats = {"pool": len(sample_ids), "selected": len(chosen), "pca_components": result.n_components,
             "variance_threshold": result.threshold}
    return StageOutput(ctx.write_members(chosen, result.row_variance[result.indices].tolist()),
                       rows_in=len(sample_ids), stats=stats, metadata=stats)


class NearDedupSpec(EmbeddingInput):
    """Keep a sample unless its cosine similarity to an earlier kept sample exceeds `threshold`."""

    kind: Literal["near_dedup"]
    threshold: float = Field(0.95, gt=-1, lt=1, description="Cosine similarity above which a sample is a duplicate.")


def run_near_dedup(spec: NearDedupSpec, ctx: StageContext) -> StageOutput:
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")  # sorted by sample_id: a stable walk order
    x = np.asarray(x)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    result = similarity_filter(unit, spec.threshold)
    dropped = np.flatnonzero(result.duplicate_of >= 0)
    stats = {"pool": len(sample_ids), "kept": int(result.kept.size), "dropped": int(dropped.size),
             "threshold": spec.threshold}
    details = ctx.write_details({
        "sample_id": [sample_ids[i] for i in dropped], "role": ["duplicate"] * dropped.size,
        "related_id": [sample_ids[result.duplicate_of[i]] for i in dropped],
        "value": result.similarity[dropped].tolist()})
    return StageOutput(ctx.write_members([sample_ids[i] for i in result.kept]), rows_in=len(sample_ids),
                       stats=stats, metadata=stats, details_file=details)


for _kind, _spec, _run, _summary in [
    ("kcenter_greedy", KCenterSpec, run_kcenter, "k-center greedy coreset on embeddings (Sener & Savarese 2018)."),
    ("kmeans_coreset", KMeansCoresetSpec, run_kmeans_coreset,
     "K-Means + per-cluster k-center coreset ('Maybe only 0.5% data is needed')."),
    ("deft_ucs", DeftUcsSpec, run_deft_ucs, "DEFT-UCS easy/hard sampling around K-Means centroids."),
    ("lift_variance", LiftVarianceSpec, run_lift_variance, "LIFT phase-2 PCA row-variance filter."),
    ("near_dedup", NearDedupSpec, run_near_dedup, "Near-duplicate removal by cosine similarity (faiss)."),
]:
    register_kind(StageKind(kind=_kind, role="selection", spec=_spec, run=_run, version="1", summary=_summary,
                            tags=("python", "numpy", "faiss")))
