"""Near-copies in a selection: which conversation each sample comes from, and a top-k that
takes at most one sample per conversation and per first user turn (`distinct: true`).

The keys are the `sample_conversations` view (sql/views/static/sample_conversations.sql):
the source conversation id with ShareGPT's part suffix `_N` removed, and the normalised first
user turn. Used by the ranking selections (`top_score`, `target_similarity`, `less`,
`influence_distillation`) and, for the counts, by every selection's metadata and report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import Field

from curation_assets.arrow_compute import pc
from curation_assets.methods.distinct import distinct_counts, distinct_walk, walk_order
from curation_assets.stages.core.registry import StageSpec
from curation_assets.store import Store
from curation_assets.store.sql_files import fetch_row, read_sql


class DistinctSpec(StageSpec):
    """The `distinct` key of ranking selections."""

    distinct: bool = Field(
        True,
        description=(
            "Take at most one sample per source conversation (ShareGPT parts `X_0`, `X_1`, ... are one) "
            "and per first user turn, walking down the ranking; false = plain top-k, which can fill "
            "the budget with one long conversation's parts."
        ),
    )


def conversation_codes(store: Store, sample_ids: Sequence[str]) -> np.ndarray:
    """(n, 2) uint64 keys of `sample_ids` in their order: conversation, first user turn."""
    wanted = pa.table(
        {"position": pa.array(range(len(sample_ids)), pa.int64()), "sample_id": pa.array(list(sample_ids), pa.string())}
    )
    with store.reader() as con:
        con.register("wanted_samples", wanted)
        try:
            rows = con.sql(read_sql("reads/conversation_keys.sql")).to_arrow_table()
        finally:
            con.unregister("wanted_samples")
    conversation = rows.column("conversation").to_numpy(zero_copy_only=False)
    first_turn = rows.column("first_turn").to_numpy(zero_copy_only=False)
    if rows.num_rows != len(sample_ids) or pc.any(rows.column("missing")).as_py():
        raise ValueError(
            "some ranked samples are not in `samples` (was the pool re-ingested mid-run?); "
            "materialise the selection again"
        )
    return np.stack([conversation, first_turn], axis=1).astype(np.uint64)


def choose_top(
    store: Store,
    sample_ids: Sequence[str],
    scores: np.ndarray,
    k: int,
    *,
    distinct: bool,
    descending: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Indices of the k best samples by `scores` (NaN last), best first; with `distinct`, a
    sample sharing a conversation or a first user turn with a better one is skipped. Also the
    stats: distinct conversations and first turns among the chosen, near-copies skipped."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 <= k <= scores.shape[0]:
        raise ValueError(f"k must be in [0, {scores.shape[0]}], got {k}")
    order = walk_order(scores, descending=descending)
    codes = conversation_codes(store, sample_ids)
    chosen = distinct_walk(order, codes, k) if distinct else order[:k]
    position = np.empty(order.size, dtype=np.int64)
    position[order] = np.arange(order.size)
    walked = int(position[chosen].max()) + 1 if chosen.size else 0
    conversations, first_turns = distinct_counts(codes[chosen]) if chosen.size else (0, 0)
    return chosen, {
        "distinct": distinct,
        "near_copies_skipped": walked - int(chosen.size),
        "distinct_conversations": conversations,
        "distinct_first_turns": first_turns,
    }


def selection_distinct_counts(con: duckdb.DuckDBPyConnection, selection: str) -> dict[str, int]:
    """Distinct conversations and first user turns among a stored selection's members."""
    _, conversations, first_turns = fetch_row(con, read_sql("reads/selection_distinct.sql"), {"selection": selection})
    return {"distinct_conversations": int(conversations), "distinct_first_turns": int(first_turns)}
