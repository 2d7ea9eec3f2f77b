"""Fine-tune the causal LM on a training set and measure held-out losses, through the cache.

Every training set gets fresh LoRA adapters and the same recipe (`FinetuneSettings`): the
shared routine of models/lora.py, samples in sample_id order, shuffled by the seed. Training
labels and the held-out loss cover the assistant turns `turns` picks (all, or the last). The
loss of a held-out sample is its mean cross-entropy over those tokens given everything before
them (as the `lm_loss` stage computes it); a set's loss is the mean over its samples. The
model is loaded only when something is not cached.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curation_assets.evaluation.finetune_cache import FinetuneCache, base_model_key
from curation_assets.evaluation.heldout import HeldoutSet
from curation_assets.evaluation.spec import FinetuneSettings
from curation_assets.models.chat_format import EncodedSample, collate, encode_conversation, longest_first
from curation_assets.stages.core.causal_lm import run_batches_with_oom_backoff


def response_losses(
    model: Any,
    encoded: Sequence[EncodedSample],
    pad_token_id: int,
    batch_size: int,
    device: str,
    stats: dict | None = None,
) -> np.ndarray:
    """Per-sample mean response-token cross-entropy (NaN for a sample without response tokens)."""
    import torch

    from curation_assets.methods.lm_signals import forward_signals

    losses = np.full(len(encoded), np.nan)

    def score(batch: list[int]) -> None:
        tensors = {k: v.to(device) for k, v in collate([encoded[i] for i in batch], pad_token_id).items()}
        with torch.inference_mode():
            losses[batch] = forward_signals(model, tensors).loss.double().cpu().numpy()

    model.eval()
    run_batches_with_oom_backoff(score, longest_first(encoded), batch_size, stats if stats is not None else {})
    return losses


@dataclass
class Measured:
    """One model's losses on every held-out set, and what it cost."""

    key: str
    losses: dict[str, np.ndarray]  # held-out set name -> per-sample losses
    finetune_seconds: float = 0.0
    eval_seconds: float = 0.0
    computed_now: bool = False
    training_steps: int | None = None
    final_training_loss: float | None = None

    def mean(self, name: str) -> float:
        values = self.losses[name]
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@dataclass
class FinetuneRunner:
    settings: FinetuneSettings
    cache: FinetuneCache
    sets: Sequence[HeldoutSet]
    log: Any = None
    stats: dict[str, Any] = field(
        default_factory=lambda: {
            "finetunes_run": 0,
            "finetunes_cached": 0,
            "loss_sets_measured": 0,
            "loss_sets_cached": 0,
        }
    )
    _model: Any = None
    _tokenizer: Any = None
    _encoded: dict[str, list[EncodedSample]] = field(default_factory=dict)

    # ---- model, loaded on first need ---------------------------------------------------
    def _load(self) -> None:
        if self._model is None:
            from curation_assets.models.causal_lm import fresh_causal_lm

            self._model, self._tokenizer = fresh_causal_lm(self.settings.model, self.settings.chat_template)

    def encode(self, conversations: Sequence[Any]) -> list[EncodedSample]:
        self._load()
        return [
            encode_conversation(self._tokenizer, m, self.settings.max_length, self.settings.model, self.settings.turns)
            for m in conversations
        ]

    def _encoded_set(self, heldout: HeldoutSet) -> list[EncodedSample]:
        if heldout.name not in self._encoded:
            self._encoded[heldout.name] = self.encode(heldout.messages)
        return self._encoded[heldout.name]

    def _measure(self, key: str, model: Any, missing: list[HeldoutSet], result: Measured) -> None:
        from curation_assets.models.device import compute_device

        for heldout in missing:
            started = time.perf_counter()
            losses = response_losses(
                model,
                self._encoded_set(heldout),
                self._tokenizer.pad_token_id,
                self.settings.batch_size,
                compute_device().name,
                self.stats,
            )
            seconds = time.perf_counter() - started
            self.cache.save_losses(key, heldout.hash, losses, seconds)
            result.losses[heldout.name] = losses
            self.stats["loss_sets_measured"] += 1
            self._info(f"{key[:12]}: {heldout.name} loss {np.nanmean(losses):.4f} ({seconds:.0f} s)")

    def _cached(self, key: str) -> tuple[Measured, list[HeldoutSet]]:
        result = Measured(key, {})
        missing = []
        for heldout in self.sets:
            losses = self.cache.losses(key, heldout.hash)
            if losses is None:
                missing.append(heldout)
            else:
                result.losses[heldout.name] = losses
                result.eval_seconds += self.cache.loss_seconds(key, heldout.hash)
                self.stats["loss_sets_cached"] += 1
        return result, missing

    # ---- the two entry points -------------------------------------------------------------
    def base_model(self) -> Measured:
        """Losses of the un-tuned model (the reference every fine-tune moves from)."""
        key = base_model_key(self.settings)
        result, missing = self._cached(key)
        if missing:
            self._load()
            started = time.perf_counter()
            self._measure(key, self._model, missing, result)
            result.eval_seconds += time.perf_counter() - started
            result.computed_now = True
        return result

    def finetuned(self, key: str, training: Sequence[Any]) -> Measured:
        """Losses after fine-tuning on `training` (conversations, in sample_id order)."""
        result, missing = self._cached(key)
        meta = self.cache.meta(key)
        if not missing:
            self.stats["finetunes_cached"] += 1
            return self._with_meta(result, meta)
        self._load()
        from peft import PeftModel

        from curation_assets.models.device import compute_device
        from curation_assets.models.lora import attach_lora, lora_finetune

        adapter = self.cache.adapter_dir(key)
        if adapter is not None:
            self.stats["finetunes_cached"] += 1
            peft_model = PeftModel.from_pretrained(self._model, str(adapter))
        else:
            peft_model = attach_lora(self._model, self.settings.lora, self.settings.seed)
            started = time.perf_counter()
            trained = lora_finetune(
                peft_model,
                self.encode(training),
                self.settings.lora,
                pad_token_id=self._tokenizer.pad_token_id,
                seed=self.settings.seed,
                device=compute_device().name,
            )
            meta = {
                "training_samples": len(training),
                "training_steps": len(trained.step_losses),
                "final_training_loss": trained.step_losses[-1] if trained.step_losses else None,
                "step_losses": trained.step_losses,
                "seconds": time.perf_counter() - started,
                "device": compute_device().describe(),
            }
            self.cache.save_adapter(key, peft_model, meta)
            self.stats["finetunes_run"] += 1
            result.computed_now = True
            self._info(
                f"{key[:12]}: fine-tuned on {len(training)} samples, {meta['training_steps']} steps "
                f"({meta['seconds']:.0f} s)"
            )
        started = time.perf_counter()
        self._measure(key, peft_model, missing, result)
        result.eval_seconds += time.perf_counter() - started
        result.computed_now = True
        self._model = peft_model.unload()  # the base model again, for the next training set
        return self._with_meta(result, meta)

    @staticmethod
    def _with_meta(result: Measured, meta: dict[str, Any]) -> Measured:
        result.finetune_seconds = float(meta.get("seconds", 0.0))
        result.training_steps = meta.get("training_steps")
        result.final_training_loss = meta.get("final_training_loss")
        return result

    def _info(self, message: str) -> None:
        if self.log is not None:
            self.log.info(message)
