"""Warm-up of a causal LM's own weights with AdamW, for Influence Distillation's Adam directions
(Nikdan et al. 2025, "Efficient Data Selection at Scale via Influence Distillation").

The released `pick_first_order` takes gradients of the model's own weights (default: every
parameter whose name contains `down_proj`) and reads their second moments from the caller's
warm-up optimizer. The project's `lora_warmup` trains LoRA adapters only, so these weights have
no optimizer state there; this module trains exactly the selected weights (everything else
frozen) with AdamW on the warm-up's training draw and optimiser settings, and keeps the result
(weights + moments + step) in one file so a later run of the same config reuses it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from curation_assets.models.chat_format import EncodedSample
from curation_assets.models.lora import LoraSettings, planned_trainer


@dataclass
class AdamState:
    """AdamW moments of some layers' weights after `step` optimizer steps."""

    moments: dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer name -> (exp_avg, exp_avg_sq)
    step: int
    betas: tuple[float, float]
    eps: float


def linear_layers(model: torch.nn.Module, names: Sequence[str]) -> dict[str, torch.nn.Linear]:
    """The model's own Linear layers whose name contains one of `names` (the released
    `proj_subset` substring match), in module order; LoRA adapter layers are never included."""
    layers = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".lora_" not in name and any(s in name for s in names)
    }
    if not layers:
        raise ValueError(
            f"no linear layer of the model has a name containing any of {list(names)}: "
            "set `params` to module names of this model (e.g. down_proj, o_proj) or to `lora`"
        )
    return layers


def train_only(model: torch.nn.Module, layers: dict[str, torch.nn.Linear]) -> None:
    """Freeze every parameter but the weights of `layers`."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for module in layers.values():
        module.weight.requires_grad_(True)


def warm_up_weights(
    model: torch.nn.Module,
    layers: dict[str, torch.nn.Linear],
    samples: Sequence[EncodedSample],
    settings: LoraSettings,
    *,
    epochs: int,
    pad_token_id: int,
    seed: int,
    device: str = "cpu",
) -> tuple[AdamState, dict[str, Any]]:
    """AdamW on the weights of `layers` for `epochs` passes of the warm-up schedule (its learning
    rate plan spans all `settings.epochs`, as the LoRA warm-up's does); returns the moments."""
    train_only(model, layers)
    trainer = planned_trainer(model, samples, settings, pad_token_id=pad_token_id, seed=seed, device=device)
    for _ in range(epochs):
        trainer.train_epoch(samples)
        if trainer.step >= trainer.total_steps:
            break
    group = trainer.optimizer.param_groups[0]
    state = trainer.optimizer.state
    moments = {
        name: (state[m.weight]["exp_avg"].detach().clone(), state[m.weight]["exp_avg_sq"].detach().clone())
        for name, m in layers.items()
    }
    adam = AdamState(moments, trainer.step, tuple(group["betas"]), float(group["eps"]))
    return adam, {
        "warmup_steps": trainer.step,
        "warmup_final_loss": trainer.step_losses[-1] if trainer.step_losses else None,
    }


def save_weight_warmup(path: Path, layers: dict[str, torch.nn.Linear], adam: AdamState) -> str:
    """Write weights + moments atomically; returns the file's SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "weights": {name: m.weight.detach().cpu() for name, m in layers.items()},
        "exp_avg": {name: v[0].cpu() for name, v in adam.moments.items()},
        "exp_avg_sq": {name: v[1].cpu() for name, v in adam.moments.items()},
        "step": adam.step,
        "betas": list(adam.betas),
        "eps": adam.eps,
    }
    partial = path.with_suffix(".partial")
    torch.save(payload, partial)
    os.replace(partial, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_weight_warmup(path: Path, layers: dict[str, torch.nn.Linear]) -> AdamState:
    """Put the saved weights into `layers`; return the saved moments."""
    payload = torch.load(path, map_location="cpu")
    if set(payload["weights"]) != set(layers):
        raise ValueError(
            f"{path} holds layers {sorted(payload['weights'])[:3]}..., not the ones selected now: "
            "delete it to warm up again"
        )
    with torch.no_grad():
        for name, module in layers.items():
            module.weight.copy_(payload["weights"][name].to(module.weight.device, module.weight.dtype))
    moments = {name: (payload["exp_avg"][name], payload["exp_avg_sq"][name]) for name in layers}
    return AdamState(moments, int(payload["step"]), tuple(payload["betas"]), float(payload["eps"]))
