"""Shared pieces of the benchmarks: timing, machine facts, result tables."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BenchResult:
    name: str
    rows: list[dict] = field(default_factory=list)  # each: measure, baseline, ours, unit, ratio, goal, met
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        measure: str,
        baseline: float,
        ours: float,
        unit: str,
        goal: str,
        met: bool | None,
        higher_is_better: bool = False,
    ) -> None:
        ratio = (ours / baseline if higher_is_better else baseline / ours) if ours and baseline else float("nan")
        self.rows.append(
            {
                "measure": measure,
                "baseline": baseline,
                "ours": ours,
                "unit": unit,
                "ratio": ratio,
                "goal": goal,
                "met": met,
            }
        )

    def markdown(self) -> str:
        lines = [
            f"## {self.name}",
            "",
            "| measure | baseline | ours | unit | ratio (x better) | goal | met |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            met = "n/a" if r["met"] is None else ("yes" if r["met"] else "no")
            lines.append(
                f"| {r['measure']} | {r['baseline']:.4g} | {r['ours']:.4g} | {r['unit']} | "
                f"{r['ratio']:.2f} | {r['goal']} | {met} |"
            )
        lines += [""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time over `repeat` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def machine() -> str:
    import torch

    from curation_assets.models.device import compute_device

    device = compute_device()
    gpu = f" ({torch.cuda.get_device_name()})" if device.name == "cuda" else ""
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, device {device.name}{gpu} {device.dtype_name}, "
        f"Python {platform.python_version()}"
    )


def progress(message: str) -> None:
    """A timestamped progress line on stderr (benchmarks run for minutes)."""
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def to_numpy(tensor: object) -> np.ndarray:
    """A float32 numpy copy of a tensor on any device and dtype (bf16 has no numpy type)."""
    return tensor.detach().float().cpu().numpy()  # type: ignore[attr-defined]


def peak_memory() -> str:
    """Process peak RSS, and the GPU's peak allocation when on CUDA."""
    import resource

    import torch

    text = f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        text += f", GPU peak allocated {torch.cuda.max_memory_allocated() / 1e9:.2f} GB"
    return text
