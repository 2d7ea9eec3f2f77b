"""LoRA fine-tuning of the causal LM (Hu et al. 2021) with peft: the shared routine for
EL2N/GraNd early-training signals, LoBaSS, MoDS and the LESS warm-up.

Each epoch can be checkpointed (adapter + AdamW state), with SHA-256 hashes of both so
`stage_runs` records exactly which weights produced a score.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from curation_assets.models.chat_format import EncodedSample, collate


class LoraSettings(BaseModel):
    """LoRA and optimiser knobs (YAML block `lora:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(default=8, gt=0, description="LoRA rank.")
    alpha: float = Field(default=16, gt=0, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: tuple[str, ...] = Field(default=("q_proj", "v_proj"), description="Module names that get adapters.")
    lr: float = Field(default=2e-4, gt=0, description="Peak learning rate (AdamW).")
    scheduler: str = Field(default="linear", description="transformers scheduler name: linear, cosine, constant, ...")
    warmup_ratio: float = Field(
        default=0.03,
        ge=0,
        lt=1,
        description=("Share of optimiser steps spent warming up (rounded up, as transformers' Trainer does)."),
    )
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    epochs: int = Field(default=1, gt=0, description="Passes over the training samples.")
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many optimiser steps.")
    batch_size: int = Field(default=4, gt=0, description="Samples per micro-batch.")
    grad_accumulation: int = Field(
        default=1,
        gt=0,
        description=("Micro-batches per optimiser step: the effective batch is batch_size x grad_accumulation."),
    )
    max_grad_norm: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Clip the accumulated gradient's global L2 norm to this before each step (transformers' Trainer "
            "default: 1.0); null: no clipping."
        ),
    )


@dataclass
class Checkpoint:
    epoch: int
    folder: Path
    adapter_sha256: str
    optimizer_sha256: str
    mean_lr: float  # mean learning rate over the epoch's steps (LESS weights checkpoints by it)

    def as_record(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "path": str(self.folder),
            "adapter_sha256": self.adapter_sha256,
            "optimizer_sha256": self.optimizer_sha256,
            "mean_lr": self.mean_lr,
        }


@dataclass
class FineTuneResult:
    model: Any  # the peft model after training, in eval mode
    step_losses: list[float] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    optimizer: Any = None


def attach_lora(base_model: Any, settings: LoraSettings, seed: int) -> Any:
    """A peft model with fresh adapters initialised from `seed` (base weights frozen)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    # peft annotates lora_alpha as int but only computes alpha / r; a fractional alpha is valid
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,  # pyright: ignore[reportArgumentType]
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base_model, config)


class LoraTrainer:
    """AdamW + scheduler over the LoRA parameters, kept across epochs (and across changing
    training subsets, as dynamic data diets need)."""

    def __init__(
        self, model: Any, settings: LoraSettings, *, total_steps: int, pad_token_id: int, seed: int, device: str = "cpu"
    ) -> None:
        import torch
        from transformers import get_scheduler

        self.model, self.settings, self.pad_token_id, self.device = model, settings, pad_token_id, device
        self.total_steps = total_steps
        self.order_rng = random.Random(seed)
        model.to(device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.trainable = trainable
        self.optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
        self.scheduler = get_scheduler(
            settings.scheduler,
            self.optimizer,
            num_warmup_steps=warmup_steps(total_steps, settings),
            num_training_steps=total_steps,
        )
        self.step = 0
        self.step_losses: list[float] = []

    def train_epoch(
        self, samples: Sequence[EncodedSample], on_step: Callable[[int, float], None] | None = None
    ) -> float:
        """One shuffled pass (or until total_steps); returns the epoch's mean learning rate.

        Every `grad_accumulation` micro-batches make one optimiser step, their mean loss its
        gradient; the epoch's last, partial group makes a step too (⌈n / effective batch⌉ steps).
        """
        import torch

        self.model.train()
        order = list(range(len(samples)))
        self.order_rng.shuffle(order)
        size, accumulation = self.settings.batch_size, self.settings.grad_accumulation
        micro = [order[i : i + size] for i in range(0, len(order), size)]
        learning_rates: list[float] = []
        for start in range(0, len(micro), accumulation):
            if self.step >= self.total_steps:
                break
            group = micro[start : start + accumulation]
            self.optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for indices in group:
                batch = {
                    k: v.to(self.device) for k, v in collate([samples[i] for i in indices], self.pad_token_id).items()
                }
                loss = self.model(**batch).loss / len(group)
                loss.backward()
                step_loss += float(loss.detach())
            learning_rates.append(float(self.scheduler.get_last_lr()[0]))
            if self.settings.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.trainable, self.settings.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            self.step_losses.append(step_loss)
            if on_step is not None:
                on_step(self.step, step_loss)
        self.model.eval()
        return sum(learning_rates) / max(1, len(learning_rates))


def steps_per_epoch(n_samples: int, settings: LoraSettings) -> int:
    """Optimiser steps of one pass: ⌈n / (batch_size x grad_accumulation)⌉."""
    return max(1, -(-n_samples // (settings.batch_size * settings.grad_accumulation)))


def planned_trainer(
    model: Any, samples: Sequence[EncodedSample], settings: LoraSettings, *, pad_token_id: int, seed: int, device: str
) -> LoraTrainer:
    """A trainer whose schedule spans every epoch over `samples` (at most `max_steps` steps)."""
    planned = steps_per_epoch(len(samples), settings) * settings.epochs
    total_steps = min(settings.max_steps or planned, planned)
    return LoraTrainer(model, settings, total_steps=total_steps, pad_token_id=pad_token_id, seed=seed, device=device)


def warmup_steps(total_steps: int, settings: LoraSettings) -> int:
    """Linear warm-up steps: ⌈warmup_ratio x total⌉ (transformers' TrainingArguments.get_warmup_steps)."""
    return math.ceil(settings.warmup_ratio * total_steps)


def lora_finetune(
    model: Any,
    samples: Sequence[EncodedSample],
    settings: LoraSettings,
    *,
    pad_token_id: int,
    seed: int,
    device: str = "cpu",
    checkpoint_dir: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> FineTuneResult:
    """Train the LoRA parameters of `model` (already wrapped by `attach_lora`) on `samples`.

    Loss = mean over response tokens of each micro-batch (transformers' causal LM loss).
    """
    trainer = planned_trainer(model, samples, settings, pad_token_id=pad_token_id, seed=seed, device=device)
    result = FineTuneResult(model=model, optimizer=trainer.optimizer)
    for epoch in range(settings.epochs):
        mean_lr = trainer.train_epoch(samples, on_step)
        if checkpoint_dir is not None:
            result.checkpoints.append(
                save_checkpoint(model, trainer.optimizer, checkpoint_dir / f"epoch-{epoch + 1}", epoch + 1, mean_lr)
            )
        if trainer.step >= trainer.total_steps:
            break
    result.step_losses = trainer.step_losses
    return result


def save_checkpoint(model: Any, optimizer: Any, folder: Path, epoch: int, mean_lr: float) -> Checkpoint:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    adapter = next(folder.glob("adapter_model.*"))
    return Checkpoint(epoch, folder, _sha256(adapter), _sha256(folder / "optimizer.pt"), mean_lr)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
