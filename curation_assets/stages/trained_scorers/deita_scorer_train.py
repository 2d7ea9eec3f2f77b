"""Stage `deita_scorer_train`: train DEITA's complexity and quality scorers (Liu et al. 2024)
on the Evol-Complexity / Evol-Quality labels of a `deita_evol` stage.

Labels: every scored variant of a chain, its 1..n ranking score mapped onto DEITA's 1..6
scale. A seeded fraction of the labelled *samples* (all variants of a sample together) is
held out; each scorer is fitted on the rest and its held-out Spearman correlation with the
labels is reported. Backends:

- `embedding_head`: ridge regression (penalty by leave-one-out error) on sentence embeddings:
  complexity on the instruction, quality on [instruction; response]. Seconds on a CPU.
- `causal_lm`: LoRA fine-tuning of the causal LM on the published scorer prompt with the
  label's digit as the only target token; scores are then the expectation over the six digit
  tokens' softmax at the first generated position, exactly as the published scorers are read.

The scorer that was evaluated is the one saved (no refit on the held-out labels), under
`<duckdb file>.artifacts/<stage>/<config_hash>/<complexity|quality>/`, and recorded with the
SHA-256 of its files in `trained_scorers`. Training happens once per config; later runs only
add rows for new samples (change a key, e.g. `seed`, to retrain on more labels).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from curation_assets.methods.deita_scoring import digit_target, rescale_ranked_score
from curation_assets.methods.heldout import heldout_groups
from curation_assets.methods.ridge import DEFAULT_ALPHAS
from curation_assets.models.causal_lm import PACKAGED_SMOLLM2, fresh_causal_lm
from curation_assets.models.device import compute_device
from curation_assets.models.digit_scorer import (
    COMPLEXITY_TEMPLATE,
    QUALITY_TEMPLATE,
    TEMPLATE_FIELDS,
    check_template,
    digit_token_ids,
    encode_prompt,
    save_adapter,
    training_sample,
)
from curation_assets.models.embeddings import PACKAGED_MINILM, SentenceEmbedder
from curation_assets.models.lora import LoraSettings, attach_lora, lora_finetune
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.registry import StageKind, StageSpec, register_kind
from curation_assets.stages.core.trained_scorers import (
    RidgeAlphas,
    TrainedScorer,
    as_records,
    heldout_fit,
    score_digit_prompts,
    stored_scorers,
    train_embedding_head,
    write_trained_scorers,
)

DIMENSIONS = ("complexity", "quality")
Backend = Literal["embedding_head", "causal_lm"]
BACKEND_KEYS: dict[str, tuple[str, ...]] = {
    "embedding_head": ("embedding_model", "alphas"),
    "causal_lm": ("model", "max_length", "lora", "complexity_template", "quality_template"),
}
DEITA_LORA = LoraSettings(epochs=3)
TRAIN_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("n_complexity_labels", pa.int32()),
        ("n_quality_labels", pa.int32()),
    ]
)
LABEL_COLUMNS = ["dimension", "variant", "instruction", "response", "score"]


class DeitaScorerTrainSpec(StageSpec):
    """Train DEITA complexity and quality scorers on a `deita_evol` stage's labels."""

    kind: Literal["deita_scorer_train"]
    labels: str = Field(description="The `deita_evol` stage whose scored variants are the training labels.")
    backend: Backend = Field(
        "embedding_head",
        description=(
            "embedding_head: ridge head on sentence embeddings (fast, CPU); causal_lm: LoRA fine-tuning of the "
            "causal LM on the DEITA scorer prompt, scored by the digit-token expectation (published format)."
        ),
    )
    heldout_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description=("Share of the labelled samples (all their variants) held out to measure Spearman correlation."),
    )
    seed: int = Field(0, description="Seed of the held-out split, adapter initialisation and batch order.")
    embedding_model: str = Field(
        PACKAGED_MINILM,
        description=("embedding_head: sentence-transformers model (packaged MiniLM by default, offline)."),
    )
    alphas: RidgeAlphas = Field(
        list(DEFAULT_ALPHAS),
        min_length=1,
        description=("embedding_head: ridge penalties tried; the one with the lowest leave-one-out error is used."),
    )
    model: str = Field(
        PACKAGED_SMOLLM2,
        description=(
            "causal_lm: the causal LM fine-tuned into a scorer (packaged SmolLM2-135M by default, a Hugging Face "
            "name, folder or .gguf file)."
        ),
    )
    max_length: int = Field(512, gt=16, description="causal_lm: tokens per scorer prompt (DEITA trained with 512).")
    lora: LoraSettings = Field(DEITA_LORA, description="causal_lm: LoRA and optimiser settings.")
    complexity_template: str = Field(
        COMPLEXITY_TEMPLATE,
        description=(
            "causal_lm: the complexity prompt, with {instruction} (published DEITA scorer prompt by default)."
        ),
    )
    quality_template: str = Field(
        QUALITY_TEMPLATE,
        description=("causal_lm: the quality prompt, with {instruction} then {output} (published by default)."),
    )
    batch_size: int = Field(16, gt=0, description="Texts per forward pass when encoding or scoring.")

    @model_validator(mode="after")
    def _backend_keys(self) -> DeitaScorerTrainSpec:
        for backend, keys in BACKEND_KEYS.items():
            misplaced = [k for k in keys if k in self.model_fields_set and backend != self.backend]
            if misplaced:
                raise ValueError(
                    f"{', '.join(f'`{k}`' for k in misplaced)} only apply to backend {backend!r} "
                    f"(this stage uses {self.backend!r})"
                )
        check_template(self.complexity_template, "complexity")
        check_template(self.quality_template, "quality")
        return self

    def template(self, dimension: str) -> str:
        return self.complexity_template if dimension == "complexity" else self.quality_template

    STAGE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"labels": ("deita_evol",)}
    UPSTREAM_KEYS: ClassVar[tuple[str, ...]] = ("labels",)

    UNHASHED: ClassVar[frozenset[str]] = frozenset({"batch_size"})  # does not change results


@dataclass
class LabelSet:
    """Training rows of one scorer: the texts it reads, 1..6 labels, the sample of each row."""

    rows: list[tuple[str, ...]]
    labels: np.ndarray
    samples: list[str]


def evol_labels(table: pa.Table) -> dict[str, LabelSet]:
    """Scored variants of a deita_evol stage, per dimension, labels mapped onto 1..6."""
    records = table.to_pylist()
    chain_length = Counter((r["sample_id"], r["dimension"]) for r in records)
    collected: dict[str, tuple[list, list, list]] = {d: ([], [], []) for d in DIMENSIONS}
    for r in records:
        n = chain_length[(r["sample_id"], r["dimension"])]
        if r["score"] is None or n < 2 or r["dimension"] not in collected:
            continue
        rows, labels, samples = collected[r["dimension"]]
        rows.append((r["instruction"],) if r["dimension"] == "complexity" else (r["instruction"], r["response"] or ""))
        labels.append(rescale_ranked_score(r["score"], n))
        samples.append(r["sample_id"])
    return {
        d: LabelSet(rows, np.array(labels, dtype=np.float64), samples)
        for d, (rows, labels, samples) in collected.items()
    }


def train_digit_scorer(
    spec: DeitaScorerTrainSpec,
    dimension: str,
    labels: LabelSet,
    heldout: np.ndarray,
    folder: Any,
    stats: dict[str, Any],
) -> TrainedScorer:
    """LoRA-tune the causal LM to answer each training prompt with its label's digit."""
    device = compute_device()
    model, tokenizer = fresh_causal_lm(spec.model)
    digit_ids = digit_token_ids(tokenizer, spec.model)
    template = spec.template(dimension)
    prompts = [
        encode_prompt(tokenizer, template, spec.max_length, **dict(zip(TEMPLATE_FIELDS[dimension], row)))
        for row in labels.rows
    ]
    training = [
        training_sample(prompts[i], digit_ids[digit_target(labels.labels[i]) - 1]) for i in np.flatnonzero(~heldout)
    ]
    model = attach_lora(model, spec.lora, spec.seed)
    result = lora_finetune(
        model, training, spec.lora, pad_token_id=tokenizer.pad_token_id, seed=spec.seed, device=device.name
    )
    model.eval()
    held = np.flatnonzero(heldout)
    predicted = np.full(len(prompts), np.nan)
    predicted[held] = score_digit_prompts(
        model,
        [prompts[i] for i in held],
        digit_ids,
        tokenizer.pad_token_id,
        batch_size=spec.batch_size,
        device=device.name,
        stats=stats,
    )
    fit = heldout_fit(predicted, labels.labels, heldout)
    files = save_adapter(
        model,
        folder,
        {
            "base_model": spec.model,
            "dimension": dimension,
            "template": template,
            "max_length": spec.max_length,
            "digit_token_ids": digit_ids,
        },
    )
    return TrainedScorer(
        dimension,
        "causal_lm",
        str(folder),
        files,
        fit.n_train,
        fit.n_heldout,
        fit.spearman,
        fit.mae,
        {
            "training_steps": len(result.step_losses),
            "final_training_loss": result.step_losses[-1] if result.step_losses else None,
            "truncated_prompts": sum(p.truncated for p in prompts),
            "device": device.describe(),
        },
    )


def run_deita_scorer_train(spec: DeitaScorerTrainSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("deita_scorer_train", [])
    stats: dict[str, Any] = {"pending": count, "backend": spec.backend}
    trained: list[TrainedScorer] = []
    split_of: dict[str, tuple[str, int, int]] = {}
    existing = stored_scorers(ctx, ctx.stage, ctx.config_hash)
    if existing:
        stats["trained"] = False
        for scorer in existing.values():
            stats.update(scorer.summary())
    else:
        label_table = ctx.stage_rows(spec.labels, [*LABEL_COLUMNS, "status"])
        label_sets = evol_labels(label_table)
        for dimension, labels in label_sets.items():
            if len(labels.labels) < 3:
                chains = Counter(
                    r["status"] for r in label_table.to_pylist() if r["dimension"] == dimension and r["variant"] == 0
                )
                raise ValueError(
                    f"{ctx.stage}: the deita_evol stage {spec.labels!r} has {len(labels.labels)} scored {dimension} "
                    f"labels; training needs at least 3. Its {dimension} chains by status: {dict(chains) or 'none'} "
                    "(unparseable rankings need a stronger judge `llm`; no chains need `dimensions` to include "
                    f"{dimension!r} and more samples)"
                )
        labelled = sorted({s for labels in label_sets.values() for s in labels.samples})
        held = heldout_groups(labelled, spec.heldout_fraction, spec.seed)
        embedder = SentenceEmbedder(spec.embedding_model) if spec.backend == "embedding_head" else None
        for dimension, labels in label_sets.items():
            heldout = np.array([s in held for s in labels.samples])
            if heldout.all():
                raise ValueError(f"{ctx.stage}: every {dimension} label is held out; lower `heldout_fraction`")
            folder = ctx.artifacts_dir / dimension
            if embedder is not None:
                scorer = train_embedding_head(
                    dimension,
                    labels.rows,
                    labels.labels,
                    heldout,
                    embedder=embedder,
                    embedding_model=spec.embedding_model,
                    alphas=spec.alphas,
                    batch_size=spec.batch_size,
                    folder=folder,
                )
            else:
                scorer = train_digit_scorer(spec, dimension, labels, heldout, folder, stats)
            trained.append(scorer)
            stats.update(scorer.summary())
            ctx.log.info(
                f"{ctx.stage}: {dimension} scorer on {scorer.n_train} labels, held-out Spearman "
                f"{scorer.heldout_spearman} over {scorer.n_heldout}"
            )
        counts = {d: Counter(labels.samples) for d, labels in label_sets.items()}
        for sample in labelled:
            split_of[sample] = (
                "heldout" if sample in held else "train",
                counts["complexity"][sample],
                counts["quality"][sample],
            )
        stats.update({"trained": True, "labelled_samples": len(labelled), "heldout_samples": len(held)})
    writer = ctx.rows_writer(TRAIN_SCHEMA)
    if count:
        ids = pq.read_table(pending, columns=["sample_id"]).column("sample_id").to_pylist()
        default = ("unlabelled", 0, 0) if not existing else ("added_later", 0, 0)
        splits = [split_of.get(sid, default) for sid in ids]
        writer.write(
            pa.table(
                {
                    "sample_id": ids,
                    "split": [s[0] for s in splits],
                    "n_complexity_labels": [s[1] for s in splits],
                    "n_quality_labels": [s[2] for s in splits],
                },
                schema=TRAIN_SCHEMA,
            )
        )
    writer.close()
    return StageOutput(
        writer.path, rows_in=count, stats=stats, metadata=dict(stats), extra={"trained_scorers": as_records(trained)}
    )


DEITA_SCORER_TRAIN = register_kind(
    StageKind(
        kind="deita_scorer_train",
        role="stage",
        spec=DeitaScorerTrainSpec,
        run=run_deita_scorer_train,
        version="1",
        summary="DEITA complexity + quality scorers trained on deita_evol labels (embedding head or LoRA causal LM), "
        "held-out Spearman reported.",
        table="deita_scorer_train",
        schema_file="schema/stages/deita_scorer_train.sql",
        rows_schema=TRAIN_SCHEMA,
        column_lineage={
            "split": ("instruction", "output"),
            "n_complexity_labels": ("instruction",),
            "n_quality_labels": ("instruction", "output"),
        },
        tags=("python", "torch"),
        write_extra=write_trained_scorers,
    )
)
