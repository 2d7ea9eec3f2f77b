"""Greedy similarity filter: walk rows in a given order, keep a row only if its cosine
similarity to every already-kept row is <= threshold.

This is near-duplicate removal (order = data order) and the DEITA representation filter
(Liu et al. 2024, "What Makes Good Data for Alignment?": order = descending score,
threshold tau = 0.9, stop at the budget; `deita_repr_filter`).

The walk is blocked but exact: a block of candidates is searched against a faiss
IndexFlatIP holding only the rows kept so far (its nearest kept row), then the block is
resolved in walk order with the block's own Gram matrix, so a candidate is compared with
the block's earlier *kept* rows only, and the kept rows join the index. The result equals
the one-row-at-a-time definition. Cost O(walked · kept · d + walked · block · d); memory
O(kept · d + block²), independent of how dense the clusters are.

How this differs from other implementations:
- DEITA's released filter with `batch_size > 1` drops a candidate that is too similar to
  any earlier candidate of its batch, even one that was itself dropped, so batching changes
  its result; here blocking never does.
- distilabel's `DeitaFiltering` computes each row's nearest neighbour once, among *all*
  rows (scikit-learn `NearestNeighbors`, cosine distance, n_neighbors=2, the second column),
  not among the rows kept so far, so both members of a near-duplicate pair are dropped and
  a row's fate does not depend on what was kept. Its `diversity_threshold` (default 0.9) is
  a cosine *distance* a row must reach (keep if distance >= 0.9, i.e. similarity <= 0.1),
  far stricter than DEITA's tau = 0.9 on similarity (keep if similarity <= 0.9). It also
  builds the score itself (complexity x quality, falling back to one of them, or 0, when a
  score is missing or zero); here a sample without a score is not walked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BLOCK = 1_024


@dataclass(frozen=True)
class FilterResult:
    kept: np.ndarray  # kept rows in walk order
    duplicate_of: np.ndarray  # per row: the nearest kept row it is too similar to (-1 if kept or never reached)
    similarity: np.ndarray  # per row: similarity to that kept row (nan if none)
    walked: int = 0  # walk positions decided before the budget stopped the walk


def similarity_filter(
    x_unit: np.ndarray,
    threshold: float,
    *,
    order: np.ndarray | None = None,
    budget: int | None = None,
    block: int = _BLOCK,
) -> FilterResult:
    """x_unit: L2-normalised rows. Rows after the budget is reached are neither kept nor marked."""
    import faiss

    x = np.ascontiguousarray(x_unit, dtype=np.float32)
    n, d = x.shape
    order = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    limit = order.size if budget is None else min(int(budget), order.size)
    kept_index = faiss.IndexFlatIP(d)
    kept: list[int] = []
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan)
    walked = 0
    for start in range(0, order.size, block):
        if len(kept) >= limit:
            break
        rows = order[start : start + block]
        vectors = x[rows]
        best_sim = np.full(rows.size, -np.inf)
        best_row = np.full(rows.size, -1, dtype=np.int64)
        if kept_index.ntotal:
            sims, positions = kept_index.search(vectors, 1)  # nearest row kept in earlier blocks
            best_sim, best_row = sims[:, 0].astype(np.float64), np.asarray(kept)[positions[:, 0]]
        gram = vectors @ vectors.T
        block_kept: list[int] = []
        for j in range(rows.size):
            if len(kept) >= limit:
                break
            walked += 1
            if best_sim[j] > threshold:
                duplicate_of[rows[j]] = best_row[j]
                similarity[rows[j]] = best_sim[j]
                continue
            kept.append(int(rows[j]))
            block_kept.append(j)
            later = gram[j, j + 1 :]  # this kept row may now be the nearest kept row of later candidates
            closer = later > best_sim[j + 1 :]
            best_sim[j + 1 :][closer] = later[closer]
            best_row[j + 1 :][closer] = rows[j]
        if block_kept:
            kept_index.add(vectors[block_kept])
    return FilterResult(np.asarray(kept, dtype=np.int64), duplicate_of, similarity, walked)


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def score_order(scores: np.ndarray, *, descending: bool = True) -> np.ndarray:
    """Indices of rows with a score (not NaN), best first; ties keep index order."""
    scores = np.asarray(scores, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(scores))
    key = -scores[valid] if descending else scores[valid]
    return valid[np.argsort(key, kind="stable")]


def deita_repr_filter(
    x: np.ndarray, scores: np.ndarray, budget: int, *, tau: float = 0.9, descending: bool = True
) -> FilterResult:
    """DEITA representation filter (Liu et al. 2024, "What Makes Good Data for Alignment?").

    Walk rows by descending score (NaN scores are skipped; ties keep row order) and keep a
    row only if its cosine similarity to its nearest already-kept row is <= tau (published
    0.9); stop once `budget` rows are kept (fewer if the walk ends first).
    """
    return similarity_filter(normalise_rows(x), tau, order=score_order(scores, descending=descending), budget=budget)
