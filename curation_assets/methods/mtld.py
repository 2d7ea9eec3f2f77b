"""MTLD lexical diversity (McCarthy & Jarvis 2010, "MTLD, vocd-D, and HD-D"), batched.

One direction: walk the tokens, keeping the type-token ratio (TTR) of the current segment;
when it falls to the threshold (0.72) a full factor is counted and a new segment starts; the
leftover segment adds the partial factor (1 − TTR) / (1 − 0.72). MTLD of a direction =
tokens / factors; the score is the mean of the forward and the backward (reversed text)
values. Undefined (NaN) when no factor accrues: an empty text, or one whose words are all
distinct.

Batched over texts: a token is a new type of its segment iff its previous occurrence in the
same text lies before the segment start, so one round advances every text by one segment
with array operations over (texts x window); rounds = the most segments in any text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from curation_assets.arrow_compute import pc

MTLD_THRESHOLD = 0.72
NOT_WORD = r"[^\p{L}\p{N}']+"  # words are runs of letters, digits and apostrophes, compared lower-cased


def mtld_words(texts: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Lower-cased word tokens of each text (punctuation dropped), as a list array."""
    # Any: pyarrow ships no types, so an isinstance test on its classes narrows nothing for pyright
    array: Any = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    spaced = pc.replace_substring_regex(pc.utf8_lower(pc.fill_null(array, "")), NOT_WORD, " ")
    pieces = pc.split_pattern(spaced, " ")
    words = pc.utf8_trim(pc.list_flatten(pieces), "'")
    keep = pc.not_equal(pc.utf8_length(words), 0)
    parents = pc.filter(pc.list_parent_indices(pieces), keep).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(parents, minlength=len(array)))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pc.filter(words, keep))


def mtld(words: pa.ListArray | Sequence[Sequence[str]], threshold: float = MTLD_THRESHOLD) -> np.ndarray:
    """MTLD per text (NaN where undefined) from word lists (e.g. `mtld_words(texts)`)."""
    lists: Any = (
        words
        if isinstance(words, (pa.ListArray, pa.LargeListArray))
        else pa.array([list(w) for w in words], pa.list_(pa.string()))
    )
    flat = pc.list_flatten(lists)
    ids = pc.dictionary_encode(flat).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = lists.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    lengths = (ends - starts).astype(np.float64)
    text_of = np.repeat(np.arange(len(starts)), ends - starts)
    reversed_position = starts[text_of] + ends[text_of] - 1 - np.arange(ids.size)
    forward = _factors(ids, text_of, starts, ends, threshold)
    backward = _factors(ids[reversed_position], text_of, starts, ends, threshold)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = (lengths / forward + lengths / backward) / 2
    scores[(forward == 0) | (backward == 0)] = np.nan
    return scores


def _previous_occurrence(ids: np.ndarray, text_of: np.ndarray) -> np.ndarray:
    """Per token: flat index of the same word's previous occurrence in the same text, or -1."""
    key = text_of * (int(ids.max(initial=0)) + 1) + ids
    order = np.lexsort((np.arange(ids.size), key))
    previous = np.full(ids.size, -1, dtype=np.int64)
    same = key[order[1:]] == key[order[:-1]]
    previous[order[1:][same]] = order[:-1][same]
    return previous


def _factors(
    ids: np.ndarray,
    text_of: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    threshold: float,
    max_cells: int = 1 << 22,
) -> np.ndarray:
    """Full + partial factor count of each text, one direction."""
    previous = _previous_occurrence(ids, text_of)
    factors = np.zeros(starts.size)
    cursor = starts.copy()
    window = np.full(starts.size, 32, dtype=np.int64)  # per text: doubled while its segments outgrow it
    active = np.flatnonzero(cursor < ends)
    while active.size:
        for width in np.unique(window[active]):
            group = active[window[active] == width]
            for part in np.array_split(group, -(-group.size * int(width) // max_cells)):
                _advance(part, int(width), previous, cursor, ends, factors, window, threshold)
        active = active[cursor[active] < ends[active]]
    return factors


def _advance(
    part: np.ndarray,
    width: int,
    previous: np.ndarray,
    cursor: np.ndarray,
    ends: np.ndarray,
    factors: np.ndarray,
    window: np.ndarray,
    threshold: float,
) -> None:
    """One segment step for the texts `part`, looking `width` tokens ahead (updates arrays in place)."""
    rest = ends[part] - cursor[part]
    width = int(min(width, rest.max()))
    steps = np.arange(width)
    valid = steps < rest[:, None]
    position = np.where(valid, cursor[part, None] + steps, 0)
    new_type = valid & (previous[position] < cursor[part, None])
    ttr = np.cumsum(new_type, axis=1) / (steps + 1)
    hit = valid & (ttr <= threshold)
    full = hit.any(axis=1)
    factors[part[full]] += 1
    cursor[part[full]] += hit[full].argmax(axis=1) + 1
    leftover = ~full & (rest <= width)  # the segment runs to the end of the text: partial factor
    last = ttr[leftover, rest[leftover] - 1]
    factors[part[leftover]] += (1 - last) / (1 - threshold)
    cursor[part[leftover]] = ends[part[leftover]]
    window[part[~full & (rest > width)]] *= 2  # no decision within the window: look further next round
