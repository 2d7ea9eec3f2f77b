"""Top-k that cannot collapse onto one conversation: a greedy walk by score that skips a
sample sharing any group key (source conversation, first user turn) with a sample already
taken.

Why: ShareGPT splits long conversations into numbered parts (`X_0`, `X_1`, ...) that often
open with the same user turn; a similarity or influence ranking scores those parts alike and
takes all of them, so one conversation fills the budget (issue #19).

The walk is computed in rounds of numpy operations, not one sample at a time. A sample that
is, among the samples still undecided, the first (in walk order) holder of every one of its
keys is taken by the greedy walk: no earlier undecided sample shares a key with it, and the
samples already taken have had their key holders removed. All such samples of a round are
taken at once; every undecided sample sharing a key with them is then skipped. The taken set
equals the one-sample-at-a-time walk over the whole order, so the first k of it in walk order
is the budgeted walk (the walk's decisions never depend on later samples). Rounds are as many
as the longest chain of samples linked by shared keys, usually a handful.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def walk_order(scores: np.ndarray, *, descending: bool = True) -> np.ndarray:
    """Indices best first; NaN scores last; ties keep input order (as `ranking.top_k`)."""
    key = -np.asarray(scores, dtype=np.float64) if descending else np.asarray(scores, dtype=np.float64).copy()
    key[np.isnan(key)] = np.inf
    return np.argsort(key, kind="stable")


def group_codes(keys: Sequence[Sequence[object] | np.ndarray], n: int) -> np.ndarray:
    """(n, m) int64 codes of m key columns (any hashable values; equal values share a code)."""
    columns = []
    for column in keys:
        values = np.asarray(column)
        if values.shape != (n,):
            raise ValueError(f"every key column needs {n} values, got shape {values.shape}")
        columns.append(np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64))
    return np.stack(columns, axis=1) if columns else np.zeros((n, 0), dtype=np.int64)


def distinct_walk(order: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """The first k samples of `order` (indices) whose key codes (rows of `codes`) are all unused
    by the samples taken before them; fewer when the keys run out."""
    order = np.asarray(order, dtype=np.int64)
    if k <= 0 or order.size == 0:
        return np.zeros(0, dtype=np.int64)
    if codes.shape[1] == 0:
        return order[:k]
    remaining = order  # undecided samples, in walk order
    taken: list[np.ndarray] = []  # walk positions (into `order`) of taken samples
    position = np.empty(codes.shape[0], dtype=np.int64)
    position[order] = np.arange(order.size)
    while remaining.size:
        first_holder = np.ones(remaining.size, dtype=bool)
        for column in codes[remaining].T:
            first = np.zeros(remaining.size, dtype=bool)
            first[np.unique(column, return_index=True)[1]] = True
            first_holder &= first
        picked = remaining[first_holder]
        taken.append(position[picked])
        undecided = remaining[~first_holder]
        remaining = undecided[~_shares_key(codes[undecided], codes[picked])]
        # later rounds take only samples after the first undecided one: the taken samples
        # before it are final, and once k of them are, the budgeted walk is known
        frontier = position[remaining[0]] if remaining.size else order.size
        if np.count_nonzero(np.concatenate(taken) < frontier) >= k:
            break
    positions = np.sort(np.concatenate(taken))
    return order[positions[:k]]


def distinct_top_k(scores: np.ndarray, keys: Sequence[Sequence[object] | np.ndarray], k: int, *,
                   descending: bool = True) -> np.ndarray:
    """Indices of the k best scores such that no two share a value in any key column, best
    first (greedy by score: a sample is skipped when one of its keys is already taken)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 <= k <= scores.shape[0]:
        raise ValueError(f"k must be in [0, {scores.shape[0]}], got {k}")
    return distinct_walk(walk_order(scores, descending=descending), group_codes(keys, scores.shape[0]), k)


def _shares_key(candidates: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """Per candidate row: does any of its key codes equal the same column's code of a picked row."""
    blocked = np.zeros(candidates.shape[0], dtype=bool)
    for column in range(candidates.shape[1]):
        blocked |= np.isin(candidates[:, column], picked[:, column])
    return blocked


def distinct_counts(codes: np.ndarray) -> list[int]:
    """Number of distinct codes per key column."""
    return [int(np.unique(codes[:, j]).size) for j in range(codes.shape[1])]
