"""Random projections of per-sample gradients that never hold the projection matrix whole.

- `DenseRademacherProjector` (LESS / TRAK): x -> Φᵀx with Φ ∈ {±1/√d}^{P×d}, generated in
  row blocks from (seed, block index), so any block can be rebuilt on demand; exact LESS
  reproduction, but on CPU generating Φ costs about as much as the backward pass.
- `KroneckerProjector` (LoGra-style): a layer's gradient G (out × in) is sketched as
  Lᵀ G R with seeded Rademacher L (out × k_out), R (in × k_in); E[⟨LᵀAR, LᵀBR⟩] = ⟨A, B⟩,
  and the cost is two small matmuls per layer.
Both preserve inner products in expectation (Johnson-Lindenstrauss); tests bound the error.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch


def _generator(seed: int, *key: object) -> torch.Generator:
    digest = hashlib.sha256(repr((seed, *key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def rademacher(rows: int, cols: int, seed: int, *key: object, scale: float = 1.0,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A seeded ±scale matrix; the same (seed, key) always gives the same matrix."""
    bits = torch.randint(0, 2, (rows, cols), generator=_generator(seed, *key), dtype=torch.int8)
    return (bits.to(device=device, dtype=dtype) * 2 - 1) * scale


class DenseRademacherProjector:
    """Φᵀx for x of dimension `n_params`, Φ generated in blocks of `block_rows` rows."""

    def __init__(self, n_params: int, dim: int, seed: int = 0, block_rows: int = 8192) -> None:
        self.n_params, self.dim, self.seed, self.block_rows = n_params, dim, seed, block_rows

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        """(batch, n_params) -> (batch, dim)."""
        if vectors.shape[1] != self.n_params:
            raise ValueError(f"expected {self.n_params} columns, got {vectors.shape[1]}")
        out = torch.zeros(vectors.shape[0], self.dim, dtype=torch.float32, device=vectors.device)
        for index, start in enumerate(range(0, self.n_params, self.block_rows)):
            block = vectors[:, start:start + self.block_rows].float()
            phi = rademacher(block.shape[1], self.dim, self.seed, "dense", index, scale=1 / math.sqrt(self.dim),
                             device=vectors.device)
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
            self._matrices[key] = rademacher(rows, cols, self.seed, "kron", layer, side,
                                             scale=1 / math.sqrt(cols), device=device)
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
