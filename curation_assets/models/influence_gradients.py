"""Projected per-sample update directions for Influence Distillation (Nikdan et al. 2025), from
one batched backward pass per batch (the per-layer activation x output-gradient form of
models/gradients.py), for LoRA adapters or for the model's own Linear weights.

Released `_create_grad_store`: per sample, the gradient of the selected parameters, times the
Adam coefficient for landmarks, unit-normalised over all selected parameters, then projected.
The projection is linear, so dividing the projected vector by the unprojected norm is the same.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch

from curation_assets.methods.projection import DenseRademacherProjector, HadamardProjector, KroneckerProjector
from curation_assets.models.gradients import LoraGradientCapture, per_sample_response_losses
from curation_assets.models.weight_warmup import linear_layers

LayerTransform = Callable[[str, torch.Tensor], torch.Tensor]  # (layer, (batch, out, in) grads) -> directions


class WeightGradientCapture(LoraGradientCapture):
    """Hooks on the model's own Linear layers whose names contain one of `names`."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str]) -> None:
        self.layers = linear_layers(model, names)
        self.inputs = {}
        self.output_grads = {}


def layer_projector(shapes: Sequence[tuple[int, int]], kind: str, dim: int, seed: int) -> Any:
    """Projector for the concatenated layer gradients. The Hadamard projection keeps at most as
    many coordinates as the gradient has (the released `Had1GProjector` samples them from it)."""
    n_params = sum(a * b for a, b in shapes)
    if kind == "dense":
        return DenseRademacherProjector(n_params, dim, seed)
    if kind == "hadamard":
        return HadamardProjector(n_params, min(dim, n_params), seed)
    return KroneckerProjector(shapes, dim, seed)


def projected_directions(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    capture: LoraGradientCapture,
    projector: Any,
    transform: LayerTransform | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """(batch, projector.dim): each sample's gradient of its mean response-token loss w.r.t. the
    captured layers' weights, mapped per layer by `transform` (an Adam direction), divided by its
    norm over all layers when `normalize`, projected. A sample without response tokens has no
    gradient and stays zero (the released code would divide by zero)."""
    model.zero_grad(set_to_none=True)
    with capture.capturing():
        per_sample_response_losses(model, batch).sum().backward()
    model.zero_grad(set_to_none=True)
    grads = capture.per_sample_grads()
    # pop: each layer's raw gradient is freed once its direction exists (memory: one copy of the batch's gradients)
    layers = [grads.pop(name) if transform is None else transform(name, grads.pop(name)) for name in capture.layers]
    projected = projector.project_layers(layers)
    if normalize:
        norms = torch.sqrt(functools.reduce(operator.add, [g.pow(2).sum(dim=(1, 2)) for g in layers]))
        projected = projected / torch.where(norms > 0, norms, torch.ones_like(norms)).unsqueeze(1)
    return projected
