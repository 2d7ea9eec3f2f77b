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


def distinct_top_k(
    scores: np.ndarray, keys: Sequence[Sequence[object] | np.ndarray], k: int, *, descending: bool = True
) -> np.ndarray:
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


def distinct_round_robin(
    rankings: Sequence[np.ndarray], k: int, codes: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Influence Distillation's round robin (`influence_distillation.round_robin`: targets take
    turns picking their best untaken sample, in a new `rng.permutation` order each round when
    `rng` is given) where a sample sharing any key code with a chosen one counts as taken.
    Returns (indices, the target that picked each). With all keys distinct it is the plain round
    robin, draw for draw. Sequential by nature: one step per pick or skipped entry."""
    taken_keys = [set() for _ in range(codes.shape[1])]
    taken: set[int] = set()
    cursors = [0] * len(rankings)
    chosen: list[int] = []
    picked_by: list[int] = []

    def blocked(index: int) -> bool:
        return index in taken or any(codes[index, j] in seen for j, seen in enumerate(taken_keys))

    while len(chosen) < k:
        progressed = False
        order = range(len(rankings)) if rng is None else rng.permutation(len(rankings))
        for target in order:
            if len(chosen) >= k:
                break
            ranking = rankings[target]
            while cursors[target] < len(ranking) and blocked(int(ranking[cursors[target]])):
                cursors[target] += 1
            if cursors[target] < len(ranking):
                index = int(ranking[cursors[target]])
                taken.add(index)
                for j, seen in enumerate(taken_keys):
                    seen.add(codes[index, j])
                chosen.append(index)
                picked_by.append(int(target))
                progressed = True
        if not progressed:  # every ranking ran out of samples with untaken keys
            break
    return np.asarray(chosen, dtype=np.int64), np.asarray(picked_by, dtype=np.int64)


def shared_key_count(codes: np.ndarray) -> int:
    """Samples sharing at least one key code with another sample: at most these can be skipped
    by a distinct walk besides the picked ones (so a ranking k + this deep suffices)."""
    shared = np.zeros(codes.shape[0], dtype=bool)
    for column in codes.T:
        _, inverse, counts = np.unique(column, return_inverse=True, return_counts=True)
        shared |= counts[inverse.reshape(-1)] > 1
    return int(shared.sum())
