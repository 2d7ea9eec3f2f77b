"""Selection `target_similarity`: the representation-based baseline of LESS (Xia et al. 2024).

Pool vectors come from an `embedding` stage; the target validation samples (targets read and
split exactly as the `less` selection reads them) are embedded with that stage's model,
template, normalisation and max_seq_length, so both sides live in one space. Score = mean
cosine similarity to each target subtask's validation samples, max over subtasks; the top
budget is kept (methods/target_similarity.py), by default at most one sample per source
conversation and per first user turn (`distinct`, stages/core/conversation_keys.py). Targets go to
`target_samples`, so an evaluation can check that its held-out part was never used for selection.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from curation_assets.arrow_compute import pc
from curation_assets.methods.target_similarity import mean_cosine_similarity
from curation_assets.models.embeddings import SentenceEmbedder
from curation_assets.stages.core.budget import BudgetedSelectionSpec
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.conversation_keys import DistinctSpec, choose_top
from curation_assets.stages.core.embedding_input import EmbeddingInput
from curation_assets.stages.core.registry import StageKind, register_kind
from curation_assets.stages.core.sentence_embedding import SentenceEmbeddingInput, render_texts
from curation_assets.stages.core.targets import TargetsInput, TargetSpec, read_target, targets_writer


class TargetSimilaritySpec(EmbeddingInput, BudgetedSelectionSpec, DistinctSpec, TargetsInput):
    """Top samples by mean cosine similarity of their embedding to the target validation samples'."""

    # the targets are embedded with the stage's sentence-transformers settings
    EMBEDDING_KINDS: ClassVar[tuple[str, ...]] = ("embedding",)

    kind: Literal["target_similarity"]
    targets: list[TargetSpec] = Field(
        min_length=1,
        description=("Target tasks, read and split like the `less` selection's (validation part used here)."),
    )


def embed_targets(embedding: SentenceEmbeddingInput, validation: pa.Table) -> np.ndarray:
    """Target validation samples embedded exactly as the `embedding` stage embeds pool samples."""
    columns = validation.select(["instruction", "input", "output", "messages"]).combine_chunks()
    batch = columns.to_batches()[0] if columns.num_rows else pa.RecordBatch.from_pylist([], schema=columns.schema)
    embedder = SentenceEmbedder(embedding.model, max_seq_length=embedding.max_seq_length)
    return embedder.encode(
        render_texts(batch, embedding.template), batch_size=embedding.batch_size, normalize=embedding.normalize
    ).vectors


def run_target_similarity(spec: TargetSimilaritySpec, ctx: StageContext) -> StageOutput:
    embedding = ctx.stage_specs.get(spec.embedding)
    if not isinstance(embedding, SentenceEmbeddingInput):
        raise ValueError(f"{spec.name}: `embedding` {spec.embedding!r} is not an embedding stage of this pipeline")
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    with tempfile.TemporaryDirectory(dir=ctx.staging_dir) as staging:
        targets = pa.concat_tables([read_target(t, Path(staging) / t.name) for t in spec.targets])
    validation = targets.filter(pc.equal(targets.column("split"), "validation"))
    labels = [
        f"{t}:{s}" for t, s in zip(validation.column("target").to_pylist(), validation.column("subtask").to_pylist())
    ]
    target_vectors = embed_targets(embedding, validation)
    scores, per_subtask = mean_cosine_similarity(np.asarray(x), target_vectors, labels)
    k = spec.budget_for(len(sample_ids))
    chosen, distinct = choose_top(ctx.store, sample_ids, scores, k, distinct=spec.distinct)
    members = ctx.write_members([sample_ids[i] for i in chosen], scores[chosen].tolist())
    best = np.argmax(np.stack([per_subtask[name] for name in sorted(per_subtask)], axis=1), axis=1)
    names = sorted(per_subtask)
    details = ctx.write_details(
        {
            "sample_id": [sample_ids[i] for i in chosen],
            "role": [f"closest to {names[best[i]]}" for i in chosen],
            "value": scores[chosen].tolist(),
        }
    )
    target_file = ctx.staging_dir / f"{ctx.stage}.targets.parquet"
    pq.write_table(targets, target_file)
    stats: dict[str, Any] = {
        "pool": len(sample_ids),
        "budget": k,
        "selected": int(chosen.size),
        "targets": [t.name for t in spec.targets],
        "validation_samples": validation.num_rows,
        "heldout_samples": targets.num_rows - validation.num_rows,
        "subtasks": names,
        "pool_mean_similarity": float(scores.mean()) if scores.size else None,
        "selected_mean_similarity": float(scores[chosen].mean()) if chosen.size else None,
        **distinct,
    }
    return StageOutput(
        members,
        rows_in=len(sample_ids),
        stats=stats,
        metadata=dict(stats),
        details_file=details,
        extra={"targets_file": str(target_file)},
    )


TARGET_SIMILARITY = register_kind(
    StageKind(
        kind="target_similarity",
        role="selection",
        spec=TargetSimilaritySpec,
        run=run_target_similarity,
        version="2",
        summary="Top samples by mean embedding cosine similarity to target validation samples "
        "(LESS's representation baseline).",
        tags=("python", "numpy", "sentence_transformers"),
        write_extra=targets_writer("writes/target_samples_replace.sql"),
    )
)
