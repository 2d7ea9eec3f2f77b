"""DEITA scoring arithmetic (Liu et al. 2024, "What Makes Good Data for Alignment?").

- The published scorers are causal LMs asked for a 1-6 score; the score is the expectation
  Σ_s s·softmax(l)_s over the logits l of the six digit tokens "1".."6" at the first
  generated position.
- The Evol ranking gives each of a chain's n variants a score on 1..n; the scorers are
  trained on the 1..6 scale, so a label is mapped linearly onto it (identity for n = 6, the
  paper's M = 5 evolution steps).
- Final DEITA score of a conversation: Σ over turns of complexity_t × quality_t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where it runs: the DEITA stages' specs load this module without torch
    import torch

DIGIT_SCORES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)


def digit_expectation(digit_logits: torch.Tensor) -> torch.Tensor:
    """(n, 6) logits of the tokens "1".."6" -> (n,) expected score in [1, 6] (float64)."""
    if digit_logits.ndim != 2 or digit_logits.shape[1] != len(DIGIT_SCORES):
        raise ValueError(f"expected (n, {len(DIGIT_SCORES)}) digit logits, got {tuple(digit_logits.shape)}")
    import torch

    probs = torch.softmax(digit_logits.double(), dim=-1)
    return probs @ torch.tensor(DIGIT_SCORES, dtype=torch.float64, device=probs.device)


def rescale_ranked_score(score: float, n_variants: int) -> float:
    """A 1..n ranking score mapped linearly onto 1..6."""
    if n_variants < 2:
        raise ValueError(f"a ranking needs at least two variants, got {n_variants}")
    if not 1 <= score <= n_variants:
        raise ValueError(f"score {score} outside 1..{n_variants}")
    return 1.0 + (len(DIGIT_SCORES) - 1) * (score - 1.0) / (n_variants - 1)


def digit_target(score: float) -> int:
    """The digit (1..6) a causal-LM scorer is trained to answer for a 1..6 label (nearest, .5 up)."""
    return int(min(max(math.floor(score + 0.5), DIGIT_SCORES[0]), DIGIT_SCORES[-1]))


def evol_score(complexity: Sequence[float | None], quality: Sequence[float | None]) -> float | None:
    """Σ_t complexity_t · quality_t over a conversation's turns; None if any turn lacks a score."""
    if len(complexity) != len(quality) or not complexity:
        return None
    if any(c is None or q is None for c, q in zip(complexity, quality)):
        return None
    return float(sum(c * q for c, q in zip(complexity, quality)))  # type: ignore[operator]
