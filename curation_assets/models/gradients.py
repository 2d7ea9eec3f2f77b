"""Per-sample gradients of LoRA parameters from ONE batched forward/backward pass.

A LoRA adapter is two linear maps (A: d_in -> r, B: r -> d_out). For a linear map
y = W x applied at every token t of sample i, dℓ_i/dW = Σ_t g_{i,t} x_{i,t}ᵀ with
x the layer input and g = dℓ/dy. Forward hooks keep x, tensor hooks keep g, and one
einsum gives every sample's gradient, because with total loss Σ_i ℓ_i the output
gradient of sample i only carries ℓ_i (samples in a batch do not interact). This is
the per-layer "activation x output-gradient" form used by GraNd, LESS and LoGra.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from curation_assets.methods.lm_signals import decoder_and_head


class LoraGradientCapture:
    """Hooks on every LoRA A/B linear layer of a peft model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.layers = {
            name: module
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and (".lora_A." in name or ".lora_B." in name)
        }
        if not self.layers:
            raise ValueError("no LoRA layers found: wrap the model with peft first")
        self.inputs: dict[str, torch.Tensor] = {}
        self.output_grads: dict[str, torch.Tensor] = {}

    @contextmanager
    def capturing(self) -> Iterator[LoraGradientCapture]:
        handles = [module.register_forward_hook(self._forward_hook(name)) for name, module in self.layers.items()]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _forward_hook(self, name: str) -> Any:
        def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.inputs[name] = inputs[0].detach()
            if output.requires_grad:
                output.register_hook(lambda grad: self.output_grads.__setitem__(name, grad.detach()))

        return hook

    def per_sample_grads(self) -> dict[str, torch.Tensor]:
        """Layer name -> (batch, out, in) gradient of each sample's own loss w.r.t. the weight."""
        return {
            name: torch.einsum("bto,bti->boi", self.output_grads[name].float(), self.inputs[name].float())
            for name in self.layers
        }

    def per_sample_sq_norms(self) -> torch.Tensor:
        """(batch,) Σ over LoRA layers of ||dℓ_i/dW||²_F."""
        # reduce, not sum(): the same left-to-right additions, but no int 0 start (a type error with no layers)
        return functools.reduce(operator.add, [g.pow(2).sum(dim=(1, 2)) for g in self.per_sample_grads().values()])


def per_sample_response_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(batch,) mean response-token cross-entropy of each sample, differentiable.

    The LM head runs only on response positions (prompt and padding logits are never built).
    """
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state[:, :-1]
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    logits = head(hidden[mask]).float()
    token_nll = torch.nn.functional.cross_entropy(logits, targets[mask], reduction="none")
    rows = mask.nonzero(as_tuple=True)[0]
    sums = torch.zeros(targets.shape[0], dtype=token_nll.dtype, device=token_nll.device).index_add(0, rows, token_nll)
    return sums / mask.sum(-1).clamp(min=1)


def per_sample_grad_norms(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], capture: LoraGradientCapture | None = None
) -> torch.Tensor:
    """GraNd's ||∇θ ℓ_i|| over the LoRA parameters for every sample of a batch, one backward pass."""
    capture = capture or LoraGradientCapture(model)
    model.zero_grad(set_to_none=True)
    with capture.capturing():
        losses = per_sample_response_losses(model, batch)
        losses.sum().backward()
    model.zero_grad(set_to_none=True)
    return capture.per_sample_sq_norms().sqrt()


def lora_optimizer_moments(
    model: torch.nn.Module, optimizer_state: dict[str, Any]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """LoRA layer name -> (exp_avg, exp_avg_sq) of its weight, from an AdamW `state_dict()` whose
    parameters are the model's trainable parameters in `model.parameters()` order (LoraTrainer)."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    state = optimizer_state["state"]
    moments = {}
    for index, name in enumerate(names):
        if name.endswith(".weight") and index in state:
            moments[name[: -len(".weight")]] = (state[index]["exp_avg"], state[index]["exp_avg_sq"])
    return moments


def per_sample_gradient_features(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    projector: Any,
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    capture: LoraGradientCapture | None = None,
    epsilon_inside_sqrt: bool = True,
) -> torch.Tensor:
    """(batch, projector.dim) projected per-sample LoRA gradients from one backward pass (LESS).

    With `moments` (a warm-up checkpoint's AdamW state) each layer's gradient is replaced by
    its Adam update direction Γ = m'/√(v'+ε) (the released LESS code; m'/(√v'+ε) with
    `epsilon_inside_sqrt=False`, the paper's formula) before projection; without, plain gradients
    (LESS uses those for the target validation samples). Layers are taken in module order.
    """
    from curation_assets.methods.less import adam_precondition

    capture = capture or LoraGradientCapture(model)
    model.zero_grad(set_to_none=True)
    with capture.capturing():
        losses = per_sample_response_losses(model, batch)
        losses.sum().backward()
    model.zero_grad(set_to_none=True)
    grads = capture.per_sample_grads()
    layers = []
    for name in capture.layers:
        grad = grads[name]
        if moments is not None:
            exp_avg, exp_avg_sq = moments[name]
            grad = adam_precondition(
                grad,
                exp_avg.to(grad.device).float(),
                exp_avg_sq.to(grad.device).float(),
                betas,
                eps,
                epsilon_inside_sqrt,
            )
        layers.append(grad)
    return projector.project_layers(layers)
