"""Stage `lobass` (Zhou et al. 2023, "LoBaSS: Gauging Learnability in Supervised
Fine-tuning Data"): learnability = loss under the base model − loss under the model
fine-tuned on the data. High = the model can learn it (and had not yet): select the top.

The reference model is LoRA adapters fine-tuned on a seeded random `train_fraction` of the
active samples; each pending sample is scored twice in one pass (adapters disabled, then
enabled). A sample the reference model trained on has a loss drop inflated by memorisation,
so `holdout` says how the training draw is scored:
- `none` (default, the paper's): every sample is scored by the one reference model. The paper
  fine-tunes it on the whole SFT set (`train_fraction` 1, the default), so every sample's drop
  is measured alike; with a smaller fraction the drawn samples rank above the rest.
- `cross_fit`: the pool splits into two halves by a seeded hash of `sample_id` (stable as
  samples arrive); each half's draw (`train_fraction` of the half) trains one model, which
  scores the other half only, so no score comes from a model that saw the sample. Two
  fine-tunes of half the size each.
- `exclude`: one model; its training draw keeps its losses but gets NULL learnability, so
  it is never ranked.
`stage_runs.stats` records `holdout`, `scored_by_model_that_saw_them`, `excluded_from_ranking`
and per reference model its training count, checkpoints and a JSON file of the sample ids it
trained on (`training_ids_file`).

Normalisation: `learnability_normalised` = (loss_base − loss_finetuned) / loss_base, the
relative drop, which removes the scale difference between easy (low-loss) and hard
samples; the raw difference is stored too, so either can rank a selection.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from curation_assets.models.chat_format import collate, encode_conversation, longest_first
from curation_assets.models.device import compute_device
from curation_assets.models.lora import LoraSettings
from curation_assets.stages.core.causal_lm import (
    CHUNK_SAMPLES,
    CausalLMInput,
    finetune_fresh_lora,
    run_batches_with_oom_backoff,
)
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.core.registry import StageKind, register_kind

LOBASS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("loss_base", pa.float64()),
        ("loss_finetuned", pa.float64()),
        ("learnability", pa.float64()),
        ("learnability_normalised", pa.float64()),
        ("in_training_set", pa.bool_()),
    ]
)


class LobassSpec(CausalLMInput):
    """Loss drop from the base model to a LoRA model fine-tuned on (a sample of) the data."""

    kind: Literal["lobass"]
    train_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description=(
            "Share of the active samples (of each half with cross_fit) a reference model trains on "
            "(paper: the whole set)."
        ),
    )
    holdout: Literal["none", "cross_fit", "exclude"] = Field(
        "none",
        description=(
            "How samples a reference model trained on are scored: none (the paper), cross_fit (two halves, each "
            "scored by the model trained on the other) or exclude (NULL learnability for the training draw)."
        ),
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA and optimiser settings.")
    seed: int = Field(0, description="Seed of the training draw(s), the halves and adapter initialisation.")

    @model_validator(mode="after")
    def _something_left_to_rank(self) -> LobassSpec:
        if self.holdout == "exclude" and self.train_fraction >= 1:
            raise ValueError("holdout: exclude with train_fraction 1 leaves no sample to rank; lower train_fraction")
        return self


@dataclass(frozen=True)
class Reference:
    """One reference model: the pool rows it trains on and the half of the pool it scores."""

    name: str  # "all", or "half-0" / "half-1" with cross_fit
    draw: list[int]  # pool rows it is fine-tuned on
    seed: int
    scores_half: int | None  # cross_fit: the half whose pending samples it scores; None: every pending sample


def cross_fit_half(sample_id: str, seed: int) -> int:
    """0 or 1 from a seeded hash of the id: a sample keeps its half when others arrive."""
    return hashlib.md5(f"{seed}:{sample_id}".encode()).digest()[0] & 1


def reference_models(spec: LobassSpec, sample_ids: Sequence[str]) -> list[Reference]:
    if spec.holdout != "cross_fit":
        return [Reference("all", _draw(range(len(sample_ids)), spec.train_fraction, spec.seed), spec.seed, None)]
    halves = [cross_fit_half(sid, spec.seed) for sid in sample_ids]
    references = []
    for half in (0, 1):
        rows = [i for i, h in enumerate(halves) if h == half]
        if not rows:
            raise ValueError(
                f"{spec.name}: holdout cross_fit needs samples in both halves; half {half} of the "
                f"{len(sample_ids)} active samples is empty (use holdout none or exclude)"
            )
        references.append(
            Reference(f"half-{half}", _draw(rows, spec.train_fraction, spec.seed + half), spec.seed + half, 1 - half)
        )
    return references


def _draw(rows: Sequence[int], fraction: float, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(rows, max(1, round(fraction * len(rows)))))


def run_lobass(spec: LobassSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("lobass_scores", ["messages"])
    device = compute_device()
    stats: dict[str, Any] = {
        "model": spec.model,
        "device": device.describe(),
        "pending": count,
        "holdout": spec.holdout,
        "train_fraction": spec.train_fraction,
        "scored_by_model_that_saw_them": 0,
        "excluded_from_ranking": 0,
        "references": [],
    }
    writer = ctx.rows_writer(LOBASS_SCHEMA)
    if count:
        pool = ctx.active_samples(["messages"])
        ids = pool.column("sample_id").to_pylist()
        conversations = pool.column("messages").to_pylist()
        references = reference_models(spec, ids)
        in_a_draw = {ids[i] for reference in references for i in reference.draw}
        for reference in references:
            folder = ctx.artifacts_dir if reference.scores_half is None else ctx.artifacts_dir / reference.name
            seen = {ids[i] for i in reference.draw}
            result, tokenizer = finetune_fresh_lora(
                spec,
                [conversations[i] for i in reference.draw],
                spec.lora,
                seed=reference.seed,
                device=device.name,
                checkpoint_dir=folder,
            )
            model = result.model
            ids_file = _write_training_ids(folder, sorted(seen))
            record: dict[str, Any] = {
                "name": reference.name,
                "training_samples": len(reference.draw),
                "training_steps": len(result.step_losses),
                "final_training_loss": result.step_losses[-1] if result.step_losses else None,
                "training_ids_file": str(ids_file),
                "scored": 0,
                "checkpoints": [checkpoint.as_record() for checkpoint in result.checkpoints],
            }
            for chunk in ctx.progress(
                iter_parquet_batches(pending, CHUNK_SAMPLES),
                total=-(-count // CHUNK_SAMPLES),
                desc=f"{reference.name}: scoring pending samples twice",
            ):
                if reference.scores_half is not None:
                    chunk = chunk.filter(
                        pa.array(
                            [
                                cross_fit_half(sid, spec.seed) == reference.scores_half
                                for sid in chunk.column("sample_id").to_pylist()
                            ]
                        )
                    )
                if chunk.num_rows == 0:
                    continue
                base, tuned = _score_twice(model, tokenizer, chunk.column("messages").to_pylist(), spec, stats)
                chunk_ids = chunk.column("sample_id").to_pylist()
                ranked = [not (spec.holdout == "exclude" and sid in seen) for sid in chunk_ids]
                record["scored"] += len(chunk_ids)
                stats["excluded_from_ranking"] += ranked.count(False)
                stats["scored_by_model_that_saw_them"] += sum(
                    1 for sid, r in zip(chunk_ids, ranked) if r and sid in seen
                )
                writer.write(
                    pa.table(
                        {
                            "sample_id": chunk_ids,
                            "loss_base": [_or_none(b) for b in base],
                            "loss_finetuned": [_or_none(t) for t in tuned],
                            "learnability": [_or_none(b - t) if r else None for b, t, r in zip(base, tuned, ranked)],
                            "learnability_normalised": [
                                _or_none((b - t) / b) if r and b > 0 else None for b, t, r in zip(base, tuned, ranked)
                            ],
                            "in_training_set": [sid in in_a_draw for sid in chunk_ids],
                        },
                        schema=LOBASS_SCHEMA,
                    )
                )
            stats["references"].append(record)
            del model, result
            _free_memory()
        if len(references) == 1:  # one model: its record's keys at the top level too
            stats.update({key: value for key, value in stats["references"][0].items() if key != "name"})
    writer.close()
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)


def _score_twice(
    model: Any, tokenizer: Any, conversations: list[Any], spec: LobassSpec, stats: dict
) -> tuple[list[float], list[float]]:
    """(loss with adapters disabled, loss with them) for each conversation, batched."""
    import torch

    from curation_assets.methods.lm_signals import forward_signals

    device = compute_device()
    encoded = [encode_conversation(tokenizer, m, spec.max_length, spec.model, spec.turns) for m in conversations]
    base = [math.nan] * len(encoded)
    tuned = [math.nan] * len(encoded)

    def score(batch: list[int]) -> None:
        tensors = collate([encoded[i] for i in batch], tokenizer.pad_token_id, device.name)
        with torch.inference_mode():
            with model.disable_adapter():
                before = forward_signals(model, tensors).loss
            after = forward_signals(model, tensors).loss
        for row, i in enumerate(batch):
            base[i], tuned[i] = float(before[row]), float(after[row])

    run_batches_with_oom_backoff(score, longest_first(encoded), spec.batch_size, stats)
    return base, tuned


def _write_training_ids(folder: Path, sample_ids: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "training_sample_ids.json"
    path.write_text(json.dumps(sample_ids))
    return path


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


LOBASS = register_kind(
    StageKind(
        kind="lobass",
        role="stage",
        spec=LobassSpec,
        run=run_lobass,
        version="1",
        summary="LoBaSS learnability: base-model loss minus fine-tuned loss (Zhou et al. 2023).",
        table="lobass_scores",
        schema_file="schema/stages/lobass.sql",
        rows_schema=LOBASS_SCHEMA,
        column_lineage=dict.fromkeys(
            ("loss_base", "loss_finetuned", "learnability", "learnability_normalised", "in_training_set"), ("messages",)
        ),
        tags=("python", "torch", "peft"),
    )
)
