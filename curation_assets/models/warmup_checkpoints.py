"""Load a LESS warm-up checkpoint (adapter weights + AdamW moments) into a peft model, and
build the gradient projector that matches the model's LoRA layers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

# torch and the projectors are imported where they run, so defining a stage's spec (which names
# ProjectionKind) does not load torch.
ProjectionKind = Literal["hadamard", "kronecker", "dense"]


def load_checkpoint(model: Any, folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Put the checkpoint's adapter weights into `model`; return its AdamW moments per LoRA layer."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from curation_assets.models.gradients import lora_optimizer_moments

    adapter = folder / "adapter_model.safetensors"
    if not adapter.exists():
        raise FileNotFoundError(f"warm-up checkpoint missing: {adapter} (re-materialise the warm-up stage)")
    set_peft_model_state_dict(model, load_file(str(adapter)))
    state = torch.load(folder / "optimizer.pt", map_location="cpu")
    return lora_optimizer_moments(model, state)


def make_projector(model: Any, kind: ProjectionKind, dim: int, seed: int) -> Any:
    from curation_assets.methods.projection import DenseRademacherProjector, HadamardProjector, KroneckerProjector
    from curation_assets.models.gradients import LoraGradientCapture

    layers = LoraGradientCapture(model).layers
    shapes = [(module.weight.shape[0], module.weight.shape[1]) for module in layers.values()]  # (out, in)
    if kind == "dense":
        return DenseRademacherProjector(sum(a * b for a, b in shapes), dim, seed)
    if kind == "hadamard":
        return HadamardProjector(sum(a * b for a, b in shapes), dim, seed)
    return KroneckerProjector(shapes, dim, seed)
