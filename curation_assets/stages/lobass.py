"""Stage `lobass` (Zhou et al. 2023, "LoBaSS: Gauging Learnability in Supervised
Fine-tuning Data"): learnability = loss under the base model − loss under the model
fine-tuned on the data. High = the model can learn it (and had not yet): select the top.

We fine-tune LoRA adapters on a seeded random `train_fraction` of the active samples and
score every pending sample twice in the same pass (adapters disabled, then enabled).
Normalisation: `learnability_normalised` = (loss_base − loss_finetuned) / loss_base, the
relative drop, which removes the scale difference between easy (low-loss) and hard
samples; the raw difference is stored too, so either can rank a selection.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from curation_assets.methods.lm_signals import forward_signals
from curation_assets.models.causal_lm import fresh_causal_lm
from curation_assets.models.chat_format import collate, encode_conversation
from curation_assets.models.device import compute_device
from curation_assets.models.lora import LoraSettings, attach_lora, lora_finetune
from curation_assets.stages.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.stages.lm_loss import CHUNK_SAMPLES, CausalLMSpec, longest_first, run_batches_with_oom_backoff
from curation_assets.stages.registry import StageKind, register_kind

LOBASS_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("loss_base", pa.float64()), ("loss_finetuned", pa.float64()),
    ("learnability", pa.float64()), ("learnability_normalised", pa.float64()), ("in_training_set", pa.bool_()),
])


class LobassSpec(CausalLMSpec):
    """Loss drop from the base model to a LoRA model fine-tuned on a sample of the data."""

    kind: Literal["lobass"]
    train_fraction: float = Field(0.1, gt=0, le=1, description="Share of active samples the LoRA model trains on.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA and optimiser settings.")
    seed: int = Field(0, description="Seed of the training draw and adapter initialisation.")


def run_lobass(spec: LobassSpec, ctx: StageContext) -> StageOutput:
    import torch

    pending, count = ctx.pending_samples("lobass_scores", ["messages"])
    device = compute_device()
    stats: dict[str, Any] = {"model": spec.model, "device": device.describe(), "pending": count}
    writer = ctx.rows_writer(LOBASS_SCHEMA)
    if count:
        pool = ctx.active_samples(["messages"])
        draw = sorted(random.Random(spec.seed).sample(range(pool.num_rows),
                                                      max(1, round(spec.train_fraction * pool.num_rows))))
        training_ids = {pool.column("sample_id")[i].as_py() for i in draw}
        conversations = pool.column("messages").to_pylist()
        model, tokenizer = fresh_causal_lm(spec.model, spec.chat_template)
        model = attach_lora(model, spec.lora, spec.seed)
        training = [encode_conversation(tokenizer, conversations[i], spec.max_length, spec.model) for i in draw]
        result = lora_finetune(model, training, spec.lora, pad_token_id=tokenizer.pad_token_id, seed=spec.seed,
                               device=device.name, checkpoint_dir=ctx.artifacts_dir)
        stats.update({"training_samples": len(training), "training_steps": len(result.step_losses),
                      "final_training_loss": result.step_losses[-1] if result.step_losses else None,
                      "checkpoints": [checkpoint.as_record() for checkpoint in result.checkpoints]})
        for chunk in ctx.progress(iter_parquet_batches(pending, CHUNK_SAMPLES), total=-(-count // CHUNK_SAMPLES),
                                  desc=f"scoring {count} samples twice"):
            encoded = [encode_conversation(tokenizer, m, spec.max_length, spec.model)
                       for m in chunk.column("messages").to_pylist()]
            base = [math.nan] * len(encoded)
            tuned = [math.nan] * len(encoded)

            def score(batch: list[int], encoded: list = encoded, base: list = base, tuned: list = tuned) -> None:
                tensors = collate([encoded[i] for i in batch], tokenizer.pad_token_id, device.name)
                with torch.inference_mode():
                    with model.disable_adapter():
                        before = forward_signals(model, tensors).loss
                    after = forward_signals(model, tensors).loss
                for row, i in enumerate(batch):
                    base[i], tuned[i] = float(before[row]), float(after[row])

            run_batches_with_oom_backoff(score, longest_first(encoded), spec.batch_size, stats)
            ids = chunk.column("sample_id").to_pylist()
            writer.write(pa.table({
                "sample_id": ids,
                "loss_base": [_or_none(b) for b in base],
                "loss_finetuned": [_or_none(t) for t in tuned],
                "learnability": [_or_none(b - t) for b, t in zip(base, tuned)],
                "learnability_normalised": [_or_none((b - t) / b) if b > 0 else None for b, t in zip(base, tuned)],
                "in_training_set": [i in training_ids for i in ids],
            }, schema=LOBASS_SCHEMA))
    writer.close()
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=stats)


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


LOBASS = register_kind(StageKind(
    kind="lobass", role="stage", spec=LobassSpec, run=run_lobass, version="1",
    summary="LoBaSS learnability: base-model loss minus fine-tuned loss (Zhou et al. 2023).",
    table="lobass_scores", schema_file="schema/stages/lobass.sql",
    column_lineage={c: ("messages",) for c in ("loss_base", "loss_finetuned", "learnability",
                                               "learnability_normalised", "in_training_set")},
    tags=("python", "torch", "peft"),
))
