"""Random projections of per-sample gradients that never hold the projection matrix whole.

- `DenseRademacherProjector` (LESS / TRAK): x -> Φᵀx with Φ ∈ {±1/√d}^{P×d}, generated in
  row blocks from (seed, block index), so any block can be rebuilt on demand; exact LESS
  reproduction, but on CPU generating Φ costs about as much as the backward pass.
- `KroneckerProjector` (LoGra-style): a layer's gradient G (out × in) is sketched as
  Lᵀ G R with seeded Rademacher L (out × k_out), R (in × k_in); E[⟨LᵀAR, LᵀBR⟩] = ⟨A, B⟩,
  and the cost is two small matmuls per layer.
Both preserve inner products in expectation (Johnson-Lindenstrauss); tests bound the error.
`FlatGradients` (no projection) and `PairedProjector` (two at once) serve exact LESS scores.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch


def _generator(seed: int, *key: object) -> torch.Generator:
    digest = hashlib.sha256(repr((seed, *key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def rademacher(
    rows: int,
    cols: int,
    seed: int,
    *key: object,
    scale: float = 1.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A seeded ±scale matrix; the same (seed, key) always gives the same matrix."""
    bits = torch.randint(0, 2, (rows, cols), generator=_generator(seed, *key), dtype=torch.int8)
    return (bits.to(device=device, dtype=dtype) * 2 - 1) * scale


def _device_rademacher(rows: int, cols: int, seed: int, index: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(_generator(seed, "dense-device", index).initial_seed())
    bits = torch.randint(0, 2, (rows, cols), generator=generator, device=device, dtype=torch.int8)
    return (bits.float() * 2 - 1) / math.sqrt(cols)


class DenseRademacherProjector:
    """Φᵀx for x of dimension `n_params`, Φ generated in blocks of `block_rows` rows.

    Φ is drawn on the CPU, so features are the same on every device. `device_rng=True` draws it
    on the vectors' device instead (TRAK's CUDA projector does this): much faster on a GPU, but
    the matrix then depends on the device, so features from different devices don't mix.
    """

    def __init__(
        self, n_params: int, dim: int, seed: int = 0, block_rows: int = 8192, device_rng: bool = False
    ) -> None:
        self.n_params, self.dim, self.seed, self.block_rows = n_params, dim, seed, block_rows
        self.device_rng = device_rng

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        """(batch, n_params) -> (batch, dim)."""
        if vectors.shape[1] != self.n_params:
            raise ValueError(f"expected {self.n_params} columns, got {vectors.shape[1]}")
        out = torch.zeros(vectors.shape[0], self.dim, dtype=torch.float32, device=vectors.device)
        for index, start in enumerate(range(0, self.n_params, self.block_rows)):
            block = vectors[:, start : start + self.block_rows].float()
            if self.device_rng and vectors.device.type != "cpu":
                phi = _device_rademacher(block.shape[1], self.dim, self.seed, index, vectors.device)
            else:
                phi = rademacher(
                    block.shape[1],
                    self.dim,
                    self.seed,
                    "dense",
                    index,
                    scale=1 / math.sqrt(self.dim),
                    device=vectors.device,
                )
            out += block @ phi
        return out

    def project_layers(self, layer_grads: Sequence[torch.Tensor]) -> torch.Tensor:
        """Layer gradients (batch, out, in), in a fixed order, as one flattened vector each."""
        return self.project(torch.cat([g.reshape(g.shape[0], -1) for g in layer_grads], dim=1))


class KroneckerProjector:
    """Per layer Lᵀ G R with k_out · k_in ≈ dim / n_layers features; features concatenated."""

    def __init__(self, layer_shapes: Sequence[tuple[int, int]], dim: int, seed: int = 0) -> None:
        self.layer_shapes = list(layer_shapes)
        per_layer = max(1, dim // len(self.layer_shapes))
        self.factors: list[tuple[int, int]] = []
        for out_features, in_features in self.layer_shapes:
            k_out = max(1, min(out_features, round(math.sqrt(per_layer * out_features / in_features))))
            k_in = max(1, min(in_features, per_layer // k_out))
            self.factors.append((k_out, k_in))
        self.dim = sum(a * b for a, b in self.factors)
        self.seed = seed
        self._matrices: dict[tuple[int, str], torch.Tensor] = {}

    def _matrix(self, layer: int, side: str, rows: int, cols: int, device: torch.device) -> torch.Tensor:
        key = (layer, side)
        if key not in self._matrices or self._matrices[key].device != device:
            self._matrices[key] = rademacher(
                rows, cols, self.seed, "kron", layer, side, scale=1 / math.sqrt(cols), device=device
            )
        return self._matrices[key]

    def project_layers(self, layer_grads: Sequence[torch.Tensor]) -> torch.Tensor:
        """(batch, out, in) per layer -> (batch, dim)."""
        parts = []
        for layer, (grad, (k_out, k_in)) in enumerate(zip(layer_grads, self.factors)):
            _, out_features, in_features = grad.shape
            left = self._matrix(layer, "out", out_features, k_out, grad.device)
            right = self._matrix(layer, "in", in_features, k_in, grad.device)
            parts.append(torch.einsum("oa,boi,ic->bac", left, grad.float(), right).reshape(grad.shape[0], -1))
        return torch.cat(parts, dim=1)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal fast Walsh-Hadamard transform of each row (length a power of two)."""
    rows, n = x.shape
    if n & (n - 1):
        raise ValueError(f"length {n} is not a power of two")
    y = x
    h = 1
    while h < n:
        y = y.reshape(rows, n // (2 * h), 2, h)
        y = torch.stack((y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]), dim=2)
        h *= 2
    return y.reshape(rows, n) / math.sqrt(n)


class HadamardProjector:
    """Subsampled randomised Hadamard transform (SRHT): x -> √(n/d) · S H D x with D seeded
    random signs, H the orthonormal Hadamard matrix (x zero-padded to n = 2^k) and S `dim`
    seeded coordinates. E[⟨Px, Py⟩] = ⟨x, y⟩ with JL-type concentration, at O(n log n) per
    vector instead of the dense projection's O(n · dim)."""

    def __init__(self, n_params: int, dim: int, seed: int = 0) -> None:
        self.n_params, self.dim, self.seed = n_params, dim, seed
        self.padded = 1 << max(0, (n_params - 1).bit_length())
        if dim > self.padded:
            raise ValueError(f"dim {dim} exceeds the padded length {self.padded}")
        self.signs = rademacher(1, n_params, seed, "srht-signs")[0]
        self.rows = torch.randperm(self.padded, generator=_generator(seed, "srht-rows"))[:dim].sort().values

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        if vectors.shape[1] != self.n_params:
            raise ValueError(f"expected {self.n_params} columns, got {vectors.shape[1]}")
        signed = vectors.float() * self.signs.to(vectors.device)
        padded = torch.nn.functional.pad(signed, (0, self.padded - self.n_params))
        return fwht(padded)[:, self.rows.to(vectors.device)] * math.sqrt(self.padded / self.dim)

    def project_layers(self, layer_grads: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.project(torch.cat([g.reshape(g.shape[0], -1) for g in layer_grads], dim=1))


class FlatGradients:
    """The identity `projector`: (batch, P) flattened layer gradients (the target side of `TargetCosines`)."""

    def project_layers(self, layer_grads: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([g.reshape(g.shape[0], -1).float() for g in layer_grads], dim=1)


class PairedProjector:
    """Two `projector`s on the same gradients, one backward pass: columns [first | second]."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def project_layers(self, layer_grads: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.first.project_layers(layer_grads), self.second.project_layers(layer_grads)], dim=1)
