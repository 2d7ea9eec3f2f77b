"""The quantile window of NLU data diets (Attendu & Corbeil 2023): scores between quantiles
(1 − offset − size) and (1 − offset), best first."""

from __future__ import annotations

import numpy as np


def quantile_window(scores: np.ndarray, size: float, offset: float) -> np.ndarray:
    """Indices with quantile(1 − offset − size) <= score <= quantile(1 − offset), best first; NaN never kept."""
    valid = ~np.isnan(scores)
    if not valid.any():
        return np.empty(0, dtype=np.int64)
    low, high = np.quantile(scores[valid], [max(0.0, 1 - offset - size), 1 - offset])
    inside = np.flatnonzero(valid & (scores >= low) & (scores <= high))
    return inside[np.argsort(-scores[inside], kind="stable")]
