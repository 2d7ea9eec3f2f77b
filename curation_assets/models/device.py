"""The compute device, chosen once per process: CUDA (bf16) when present, else CPU (float32)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch  # imported lazily at run time: this module is read before torch is needed


@dataclass(frozen=True)
class Device:
    name: str  # "cuda" | "cpu"
    dtype_name: str  # "bfloat16" | "float32"
    threads: int

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype_name)

    def describe(self) -> str:
        return f"{self.name}/{self.dtype_name}/{self.threads}t"


@cache
def compute_device() -> Device:
    """CURATION_DEVICE=cpu|cuda overrides; CURATION_THREADS (else torch's default) sets CPU threads;
    CURATION_DTYPE=float32|bfloat16 overrides the device's default dtype."""
    import torch

    requested = os.environ.get("CURATION_DEVICE", "").lower()
    use_cuda = torch.cuda.is_available() if requested in ("", "auto") else requested == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("CURATION_DEVICE=cuda but torch sees no CUDA device")
    threads = int(os.environ.get("CURATION_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(threads)
    dtype = os.environ.get("CURATION_DTYPE", "").lower() or ("bfloat16" if use_cuda else "float32")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"CURATION_DTYPE={dtype!r}: expected float32 or bfloat16")
    return Device("cuda" if use_cuda else "cpu", dtype, threads)
