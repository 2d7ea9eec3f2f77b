"""Selection `data_diet_dynamic` (Attendu & Corbeil 2023, "NLU on Data Diets: Dynamic Data
Subset Selection for NLP Classification Tasks").

LoRA fine-tuning where, every `prune_frequency` epochs, every sample of the pool is scored
(EL2N, GraNd or loss) with the current model, the score is smoothed by an exponential
moving average (ema = alpha·ema + (1 − alpha)·score, alpha 0.8: history weighs 0.8), and
the next epochs train only on the window between quantiles (1 − offset − size, 1 − offset).
The selection is the final window; every sample's smoothed score goes to
`selection_details` (role `in_window` / `outside`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from curation_assets.methods.quantile_window import quantile_window
from curation_assets.models.causal_lm import fresh_causal_lm
from curation_assets.models.chat_format import EncodedSample, collate, encode_conversation, longest_first
from curation_assets.models.device import compute_device
from curation_assets.models.lora import LoraSettings, LoraTrainer, attach_lora, steps_per_epoch
from curation_assets.stages.core.causal_lm import CausalLMInput, run_batches_with_oom_backoff
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.registry import StageKind, register_kind


class DataDietSpec(CausalLMInput):
    """Dynamic data diet: re-score during fine-tuning, keep a quantile window of the EMA score."""

    kind: Literal["data_diet_dynamic"]
    score: Literal["el2n", "grand", "loss"] = Field("el2n", description="Score recomputed during training.")
    epochs: int = Field(3, gt=0, description="Fine-tuning epochs.")
    prune_frequency: int = Field(1, gt=0, description="Re-score and re-select every this many epochs.")
    ema_alpha: float = Field(0.8, ge=0, lt=1, description="EMA weight of the history (paper: 0.8).")
    size: float = Field(0.5, gt=0, le=1, description="Window width as a share of the pool.")
    offset: float = Field(0.0, ge=0, lt=1, description="Share of top-scoring samples skipped above the window.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA and optimiser settings.")
    seed: int = Field(0, description="Seed of adapters and training order.")

    @model_validator(mode="after")
    def _fits(self) -> DataDietSpec:
        if self.offset + self.size > 1:
            raise ValueError(f"offset + size must be <= 1, got {self.offset + self.size}")
        return self


def score_pool(
    model: Any, encoded: list[EncodedSample], score: str, pad_token_id: int, batch_size: int, device: str, stats: dict
) -> np.ndarray:
    import torch

    from curation_assets.methods.lm_signals import forward_signals
    from curation_assets.models.gradients import LoraGradientCapture, per_sample_grad_norms

    values = np.full(len(encoded), np.nan)
    capture = LoraGradientCapture(model) if score == "grand" else None

    def run(batch: list[int]) -> None:
        tensors = collate([encoded[i] for i in batch], pad_token_id, device)
        if capture is not None:
            result = per_sample_grad_norms(model, tensors, capture)
        else:
            with torch.inference_mode():
                signals = forward_signals(model, tensors)
            result = signals.el2n if score == "el2n" else signals.loss
        values[batch] = result.double().cpu().numpy()

    run_batches_with_oom_backoff(run, longest_first(encoded), batch_size, stats)
    return values


def run_data_diet(spec: DataDietSpec, ctx: StageContext) -> StageOutput:
    pool = ctx.active_samples(["messages"])
    device = compute_device()
    stats: dict[str, Any] = {
        "model": spec.model,
        "device": device.describe(),
        "pool": pool.num_rows,
        "score": spec.score,
        "window_sizes": [],
    }
    model, tokenizer = fresh_causal_lm(spec.model, spec.chat_template)
    model = attach_lora(model, spec.lora, spec.seed)
    encoded = [
        encode_conversation(tokenizer, m, spec.max_length, spec.model, spec.turns)
        for m in pool.column("messages").to_pylist()
    ]
    window_share = spec.size
    planned = sum(
        steps_per_epoch(len(encoded) if e == 0 else max(1, round(window_share * len(encoded))), spec.lora)
        for e in range(spec.epochs)
    )
    trainer = LoraTrainer(
        model, spec.lora, total_steps=planned, pad_token_id=tokenizer.pad_token_id, seed=spec.seed, device=device.name
    )
    ema: np.ndarray | None = None
    window = np.arange(len(encoded))
    for epoch in ctx.progress(range(spec.epochs), total=spec.epochs, desc="diet epochs"):
        if epoch % spec.prune_frequency == 0 and epoch > 0:
            current = score_pool(
                model, encoded, spec.score, tokenizer.pad_token_id, spec.batch_size, device.name, stats
            )
            ema = current if ema is None else spec.ema_alpha * ema + (1 - spec.ema_alpha) * current
            window = quantile_window(ema, spec.size, spec.offset)
            stats["window_sizes"].append(int(window.size))
        trainer.train_epoch([encoded[i] for i in window])
    final = score_pool(model, encoded, spec.score, tokenizer.pad_token_id, spec.batch_size, device.name, stats)
    ema = final if ema is None else spec.ema_alpha * ema + (1 - spec.ema_alpha) * final
    window = quantile_window(ema, spec.size, spec.offset)
    ids = pool.column("sample_id").to_pylist()
    inside = set(window.tolist())
    details = ctx.write_details(
        {
            "sample_id": ids,
            "role": ["in_window" if i in inside else "outside" for i in range(len(ids))],
            "value": [None if np.isnan(v) else float(v) for v in ema],
        }
    )
    stats.update({"selected": int(window.size), "training_steps": trainer.step})
    return StageOutput(
        ctx.write_members([ids[i] for i in window], ema[window].tolist()),
        rows_in=len(ids),
        stats=stats,
        metadata=stats,
        details_file=details,
    )


DATA_DIET = register_kind(
    StageKind(
        kind="data_diet_dynamic",
        role="selection",
        spec=DataDietSpec,
        run=run_data_diet,
        version="1",
        summary="Dynamic data diet: EMA of EL2N/GraNd/loss re-scored during LoRA fine-tuning, quantile window.",
        tags=("python", "torch", "peft"),
    )
)
