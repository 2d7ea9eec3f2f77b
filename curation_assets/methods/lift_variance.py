"""LIFT phase-2 variance selection (Xu et al. 2023, "Rethinking the Instruction Quality: LIFT is What You Need").

Standardise the embeddings, reduce them with PCA keeping 95% of the variance, compute
each row's variance across the reduced components, keep rows above the 80th percentile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VarianceSelection:
    indices: np.ndarray  # kept rows, highest variance first
    row_variance: np.ndarray  # every row's variance in PCA space
    threshold: float
    n_components: int


def lift_variance_selection(
    x: np.ndarray, *, variance_kept: float = 0.95, percentile: float = 80.0, seed: int = 0
) -> VarianceSelection:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit_transform(np.asarray(x, dtype=np.float64))
    pca = PCA(n_components=variance_kept, svd_solver="full", random_state=seed)
    reduced = pca.fit_transform(scaled)
    row_variance = reduced.var(axis=1)
    threshold = float(np.percentile(row_variance, percentile))
    kept = np.flatnonzero(row_variance > threshold)
    kept = kept[np.argsort(-row_variance[kept], kind="stable")]
    return VarianceSelection(kept, row_variance, threshold, int(pca.n_components_))
