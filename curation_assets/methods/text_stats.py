"""Character and word counts per sample (the length indicators of Instruction Mining, Cao et al. 2023)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation_assets.arrow_compute import pc

WORD_PATTERN = r"\S+"


def text_length_stats(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """Counts for a batch with sample_id, instruction, input, output, messages (list of role/content), n_turns."""

    def chars(name: str) -> pa.Array:
        return pc.cast(pc.utf8_length(batch.column(name)), pa.int32())

    def words(name: str) -> pa.Array:
        return pc.cast(pc.count_substring_regex(batch.column(name), WORD_PATTERN), pa.int32())

    messages = batch.column("messages")
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    content_chars = pc.utf8_length(pc.struct_field(pc.list_flatten(messages), "content")).to_numpy(zero_copy_only=False)
    conversation_chars = np.bincount(
        pc.list_parent_indices(messages).to_numpy(zero_copy_only=False), weights=content_chars, minlength=batch.num_rows
    ).astype(np.int64)
    return pa.table(
        {
            "sample_id": batch.column("sample_id"),
            "instruction_chars": chars("instruction"),
            "input_chars": chars("input"),
            "output_chars": chars("output"),
            "instruction_words": words("instruction"),
            "output_words": words("output"),
            "conversation_chars": pa.array(conversation_chars, pa.int64()),
            "n_turns": pc.cast(batch.column("n_turns"), pa.int32()),
        }
    )
