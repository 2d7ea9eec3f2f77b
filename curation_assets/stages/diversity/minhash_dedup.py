"""Selection `minhash_dedup`: near-duplicate removal by MinHash + LSH over word shingles, with
data-juicer's `document_minhash_deduplicator` defaults (see methods/minhash.py and
docs/methods/diversity.md)."""

from __future__ import annotations

import string
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from curation_assets.methods.minhash import (
    estimated_jaccard,
    lsh_bands,
    lsh_clusters,
    minhash_signatures,
    permutations,
    sha1_hash32,
    word_shingles,
)
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.registry import StageKind, StageSpec, register_kind
from curation_assets.stages.core.sentence_embedding import TEMPLATE_FIELDS, render_texts

TEXT_COLUMNS = ["instruction", "input", "output", "messages"]


class MinHashDedupSpec(StageSpec):
    """Keep one sample of every cluster of near-duplicates found by MinHash LSH: the one seen first."""

    kind: Literal["minhash_dedup"]
    template: str = Field(
        "{conversation}",
        description=(
            "Text to shingle, a Python format string over {instruction}, {input}, {output}, {system} and "
            "{conversation} (every turn as 'role: content'); '{instruction}\\n{input}' dedups prompts only."
        ),
    )
    window_size: int = Field(5, gt=0, description="Words per shingle (data-juicer: 5).")
    lowercase: bool = Field(True, description="Lower-case the text before shingling (data-juicer: true).")
    shingling: Literal["complete", "data_juicer"] = Field(
        "complete",
        description=(
            "'complete': every word window, whitespace-split, a text shorter than the window is one shingle. "
            "'data_juicer': the released code's windows (space-split, the last window dropped, texts of at most "
            "window_size words get no shingle and all merge)."
        ),
    )
    num_permutations: int = Field(256, gt=0, le=4096, description="MinHash permutations (data-juicer: 256).")
    jaccard_threshold: float = Field(
        0.7,
        gt=0,
        lt=1,
        description=("Jaccard similarity the LSH bands are tuned for (data-juicer: 0.7; NeMo Curator: 0.8)."),
    )
    num_bands: int | None = Field(
        None,
        gt=0,
        description=("LSH bands; with num_rows_per_band, overrides the datasketch optimum for jaccard_threshold."),
    )
    num_rows_per_band: int | None = Field(None, gt=0, description="Signature values per LSH band.")
    seed: int = Field(42, description="Seed of the permutations (data-juicer: 42).")
    batch_size: int = Field(2_048, gt=0, description="Samples read and hashed per batch (does not change results).")

    UNHASHED: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    @field_validator("template")
    @classmethod
    def _known_fields(cls, template: str) -> str:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        if (names - set(TEMPLATE_FIELDS)) or not names:
            raise ValueError(f"template fields must be among {', '.join(TEMPLATE_FIELDS)}; got {sorted(names)}")
        return template

    @model_validator(mode="after")
    def _bands_fit(self) -> MinHashDedupSpec:
        if (self.num_bands is None) != (self.num_rows_per_band is None):
            raise ValueError(
                "give both num_bands and num_rows_per_band, or neither (then they are chosen for jaccard_threshold)"
            )
        if self.num_bands is not None and self.num_rows_per_band is not None:
            if self.num_bands * self.num_rows_per_band > self.num_permutations:
                raise ValueError(
                    f"num_bands x num_rows_per_band = {self.num_bands * self.num_rows_per_band} "
                    f"exceeds num_permutations = {self.num_permutations}"
                )
        return self

    def bands(self) -> tuple[int, int]:
        if self.num_bands is not None and self.num_rows_per_band is not None:
            return self.num_bands, self.num_rows_per_band
        return lsh_bands(self.jaccard_threshold, self.num_permutations)


def run_minhash_dedup(spec: MinHashDedupSpec, ctx: StageContext) -> StageOutput:
    # keep priority: the sample that arrived first (earliest ingest, then file position), as data-juicer
    # keeps the first in dataset order and a re-ingest keeps the old sample; texts stream in sample_id order
    sample_ids, priority = ctx.ingest_order()
    n = len(sample_ids)
    if n == 0:
        stats = {"pool": 0, "kept": 0, "dropped": 0}
        return StageOutput(
            ctx.write_members([]),
            rows_in=0,
            stats=stats,
            metadata=stats,
            details_file=ctx.write_details({"sample_id": []}),
        )
    bands, rows = spec.bands()
    a, b = permutations(spec.num_permutations, spec.seed)
    # signatures on disk in the staging folder: memory holds one batch of texts and shingles
    signatures = np.lib.format.open_memmap(
        ctx.staging_dir / f"{ctx.stage}.minhash.npy", mode="w+", dtype=np.uint32, shape=(n, spec.num_permutations)
    )
    start = 0
    batches = ctx.iter_active_samples(TEXT_COLUMNS, spec.batch_size)
    for batch in ctx.progress(batches, total=-(-n // spec.batch_size), desc=f"minhash of {n} samples"):
        if batch.column("sample_id").to_pylist() != sample_ids[start : start + batch.num_rows]:
            raise RuntimeError(f"{ctx.stage}: the active samples changed while reading them; run the selection again")
        hashes = [
            sha1_hash32(word_shingles(text, spec.window_size, spec.lowercase, spec.shingling))
            for text in render_texts(batch, spec.template)
        ]
        signatures[start : start + batch.num_rows] = minhash_signatures(hashes, a, b)
        start += batch.num_rows
    if start != n:
        raise RuntimeError(f"{ctx.stage}: the active samples changed while reading them; run the selection again")
    clusters = lsh_clusters(signatures, bands, rows, priority)
    dropped = clusters.dropped
    kept = clusters.kept[np.argsort(priority[clusters.kept], kind="stable")]  # rank 1 = seen first
    similarity = estimated_jaccard(signatures, dropped, clusters.keeper[dropped])
    stats = {
        "pool": n,
        "kept": int(kept.size),
        "dropped": int(dropped.size),
        "clusters": int(clusters.cluster.max() + 1) if n else 0,
        "candidate_pairs": clusters.candidate_pairs,
        "bands": bands,
        "rows_per_band": rows,
        "jaccard_threshold": spec.jaccard_threshold,
    }
    details = ctx.write_details(
        {
            "sample_id": [sample_ids[i] for i in dropped],
            "role": ["duplicate"] * dropped.size,
            "cluster": clusters.cluster[dropped].tolist(),
            "related_id": [sample_ids[i] for i in clusters.keeper[dropped]],
            "value": similarity.tolist(),
        }
    )
    del signatures
    return StageOutput(
        ctx.write_members([sample_ids[i] for i in kept]), rows_in=n, stats=stats, metadata=stats, details_file=details
    )


MINHASH_DEDUP = register_kind(
    StageKind(
        kind="minhash_dedup",
        role="selection",
        spec=MinHashDedupSpec,
        run=run_minhash_dedup,
        version="1",
        summary="Near-duplicate removal by MinHash LSH over word 5-grams (data-juicer defaults; datasketch).",
        tags=("python", "numpy", "datasketch"),
    )
)
